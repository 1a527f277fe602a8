#!/usr/bin/env python3
"""Checks deploy/benchmark/ (python3 -m unittest, or run this file):

- both VirtualMachines validate against KubeVirt v1.9.0's VirtualMachine CRD schema
  (kubevirt-v1.9.0-virtualmachine.schema.json, see extract_schema.py), strictly: an unknown
  field is an error, as with `kubectl apply --validate=strict`; negative cases prove it;
- the two VMs are identical but for name, benchmark-vm label and the opt-out annotation, and
  the opt-out is the policy's (`hyperv-layered.io/hypervisor: kvm` in src/choice.rs);
- the workload Secret's cloud-config parses, and its script runs here (small sizes) and prints
  the one line scripts/compare-vms.sh parses.

Needs PyYAML and jsonschema (pip install pyyaml jsonschema); without them it says so and fails.
"""

import copy
import json
import os
import re
import subprocess
import tempfile
import unittest

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BENCH = os.path.join(ROOT, "deploy", "benchmark")
SCHEMA = os.path.join(HERE, "kubevirt-v1.9.0-virtualmachine.schema.json")


def strict(schema):
    """OpenAPI v3 (CRD structural schema) -> JSON Schema that rejects unknown fields.

    The API server prunes (default) or rejects (strict field validation) fields a structural
    schema does not declare, unless x-kubernetes-preserve-unknown-fields; `nullable` allows
    null; x-kubernetes-int-or-string is already spelled as anyOf integer/string by KubeVirt.
    """
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not")
           else v for k, v in schema.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def load(name):
    with open(os.path.join(BENCH, name)) as f:
        return yaml.safe_load(f)


def record_key():
    """The policy's decision key, read from src/choice.rs (defined once there)."""
    with open(os.path.join(ROOT, "src", "choice.rs")) as f:
        m = re.search(r'pub const HYPERVISOR_KEY: &str = "([^"]+)";', f.read())
    assert m, "HYPERVISOR_KEY not found in src/choice.rs"
    return m.group(1)


class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(SCHEMA) as f:
            cls.validator = jsonschema.Draft7Validator(strict(json.load(f)["schema"]))
        cls.vms = {hv: load("vm-%s.yaml" % hv) for hv in ("mshv", "kvm")}

    def errors(self, doc):
        return sorted(e.message for e in self.validator.iter_errors(doc))

    def test_vms_validate(self):
        for hv, vm in self.vms.items():
            with self.subTest(hv=hv):
                self.assertEqual(vm["apiVersion"], "kubevirt.io/v1")
                self.assertEqual(vm["kind"], "VirtualMachine")
                self.assertEqual(self.errors(vm), [])

    def test_unknown_field_is_rejected(self):
        vm = copy.deepcopy(self.vms["mshv"])
        vm["spec"]["template"]["spec"]["domain"]["cpu"]["corez"] = 2
        self.assertTrue(any("corez" in e for e in self.errors(vm)), self.errors(vm))
        vm = copy.deepcopy(self.vms["mshv"])
        vm["spec"]["template"]["spec"]["domain"]["devices"]["logSerialConsoles"] = True
        self.assertTrue(any("logSerialConsoles" in e for e in self.errors(vm)))

    def test_wrong_type_is_rejected(self):
        vm = copy.deepcopy(self.vms["kvm"])
        vm["spec"]["template"]["spec"]["domain"]["cpu"]["cores"] = "two"
        self.assertTrue(any("'two' is not of type 'integer'" in e for e in self.errors(vm)), self.errors(vm))
        vm = copy.deepcopy(self.vms["kvm"])
        vm["spec"]["template"]["spec"]["domain"]["devices"]["logSerialConsole"] = "yes"
        self.assertTrue(any("is not of type 'boolean'" in e for e in self.errors(vm)))

    def test_missing_required_is_rejected(self):
        vm = copy.deepcopy(self.vms["kvm"])
        del vm["spec"]["template"]["spec"]["domain"]["devices"]
        self.assertTrue(any("'devices' is a required property" in e for e in self.errors(vm)))

    def test_pair_differs_only_by_name_label_and_opt_out(self):
        key = record_key()
        mshv, kvm = copy.deepcopy(self.vms["mshv"]), copy.deepcopy(self.vms["kvm"])
        self.assertEqual(kvm["spec"]["template"]["metadata"]["annotations"], {key: "kvm"})
        self.assertEqual(mshv["spec"]["template"]["metadata"]["annotations"], {})
        # the opt-out is an annotation; as a label it would not opt out (src/launcher.rs)
        self.assertNotIn(key, kvm["spec"]["template"]["metadata"].get("labels", {}))
        for vm, hv in ((mshv, "mshv"), (kvm, "kvm")):
            self.assertEqual(vm["metadata"]["name"], "hvl-bench-" + hv)
            self.assertEqual(vm["spec"]["template"]["metadata"]["labels"].pop("hyperv-layered.io/benchmark-vm"), hv)
            del vm["metadata"]["name"]
            del vm["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(mshv, kvm)

    def test_serial_console_is_logged(self):
        for vm in self.vms.values():
            devices = vm["spec"]["template"]["spec"]["domain"]["devices"]
            self.assertIs(devices["autoattachSerialConsole"], True)
            self.assertIs(devices["logSerialConsole"], True)

    def test_both_use_the_workload_secret(self):
        secret = load("workload.yaml")
        self.assertEqual((secret["apiVersion"], secret["kind"]), ("v1", "Secret"))
        for vm in self.vms.values():
            vols = {v["name"]: v for v in vm["spec"]["template"]["spec"]["volumes"]}
            self.assertEqual(vols["cloudinitdisk"]["cloudInitNoCloud"], {"secretRef": {"name": secret["metadata"]["name"]}})


class Workload(unittest.TestCase):
    def test_script_prints_one_parseable_line(self):
        secret = load("workload.yaml")
        userdata = secret["stringData"]["userdata"]
        self.assertTrue(userdata.startswith("#cloud-config\n"))
        config = yaml.safe_load(userdata)
        (script,) = [f["content"] for f in config["write_files"] if f["path"] == "/usr/local/bin/hvl-bench"]
        self.assertEqual(config["runcmd"], [["/usr/local/bin/hvl-bench"]])
        with tempfile.TemporaryDirectory(dir=HERE) as tmp:
            path = os.path.join(tmp, "hvl-bench")
            with open(path, "w") as f:
                f.write(script)
            # a directory on a disk (tmpfs refuses O_DIRECT), a few MB, one second of openssl
            env = dict(os.environ, HVL_CONSOLE=os.path.join(tmp, "console"), HVL_LOG=os.path.join(tmp, "log"),
                       HVL_DIR=tmp, HVL_REPS="2", HVL_CPU_SECONDS="1", HVL_MEM_MB="8", HVL_DISK_MB="4")
            subprocess.run(["bash", path], env=env, check=True, timeout=120)
            with open(os.path.join(tmp, "console")) as f:
                lines = f.read().splitlines()
            # and scripts/compare-vms.sh reads it (the same run on both sides: ratio 1)
            table = subprocess.run([os.path.join(ROOT, "scripts", "compare-vms.sh"), "table",
                                    os.path.join(tmp, "console"), os.path.join(tmp, "console")],
                                   check=True, stdout=subprocess.PIPE, text=True).stdout
            self.assertFalse(os.path.exists(os.path.join(tmp, "hvl-bench.img")), "disk file left behind")
        self.assertEqual(len(lines), 1, lines)
        tokens = lines[0].split()
        self.assertEqual(tokens[:2], ["HVL-BENCH", "v=1"])
        fields = dict(t.split("=", 1) for t in tokens[2:])
        self.assertEqual(sorted(fields), sorted(["name", "virt", "boot_s", "cpu_sha256_mbps", "mem_fill_mbps",
                                                 "disk_write_mbps", "disk_read_mbps"]))
        for k in ("boot_s", "cpu_sha256_mbps", "mem_fill_mbps", "disk_write_mbps", "disk_read_mbps"):
            with self.subTest(field=k):
                self.assertGreater(float(fields[k]), 0)  # a number: every tool ran here
        cpu_row = [r for r in table.splitlines() if r.startswith("cpu sha256 ")]
        self.assertEqual(cpu_row[0].split()[-2:], ["1.00", "1.00x"], table)


if __name__ == "__main__":
    unittest.main()
