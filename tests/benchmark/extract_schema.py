#!/usr/bin/env python3
"""Writes the VirtualMachine CRD's openAPIV3Schema of a KubeVirt release as JSON.

  extract_schema.py KUBEVIRT_GIT_DIR TAG OUT.json

KubeVirt generates its CRDs' schemas into one Go file of YAML strings,
pkg/virt-operator/resource/generate/components/validations_generated.go (virt-operator installs
them as the CRDs' spec.versions[].schema). This takes the "virtualmachine" entry of TAG,
drops the `description` texts (documentation only, 90 % of the size) and writes the rest
unchanged. The committed copy is kubevirt-v1.9.0-virtualmachine.schema.json; regenerate with

  git clone --bare https://github.com/kubevirt/kubevirt kv.git   # or any copy with the tag
  tests/benchmark/extract_schema.py kv.git v1.9.0 tests/benchmark/kubevirt-v1.9.0-virtualmachine.schema.json
"""

import json
import subprocess
import sys

import yaml

PATH = "pkg/virt-operator/resource/generate/components/validations_generated.go"


def strip_descriptions(node, in_properties=False):
    """Drop the `description` keyword; a property that is *named* description stays."""
    if isinstance(node, dict):
        return {
            k: strip_descriptions(v, in_properties=(k == "properties" and not in_properties))
            for k, v in node.items()
            if in_properties or k != "description"
        }
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def main(git_dir, tag, out):
    src = subprocess.run(["git", "--git-dir", git_dir, "show", "%s:%s" % (tag, PATH)],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    start = src.index('\t"virtualmachine": `') + len('\t"virtualmachine": `')
    end = src.index("`", start)
    schema = yaml.safe_load(src[start:end])["openAPIV3Schema"]
    doc = {
        "$comment": "kubevirt/kubevirt@%s %s \"virtualmachine\" openAPIV3Schema, descriptions removed "
                    "(tests/benchmark/extract_schema.py)" % (tag, PATH),
        "schema": strip_descriptions(schema),
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(*sys.argv[1:])
