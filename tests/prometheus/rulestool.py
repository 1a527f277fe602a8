#!/usr/bin/env python3
"""Checks around deploy/prometheus-rules.yaml, stdlib only (no PyYAML).

  rulestool.py extract PROMETHEUSRULE OUT     write the PrometheusRule's `spec` as a plain rule file
  rulestool.py lint RULES REPO_ROOT TEST...   conventions + every rule/alert has a unit test
  rulestool.py dashboard DASHBOARD RULES      dashboard JSON only uses recorded or listed raw series
  rulestool.py selftest                       the YAML subset parser against known inputs

The YAML reader understands the subset these files use: block mappings and sequences,
plain/single-/double-quoted scalars, `|`/`|-` block scalars, `[]`/`{}` and full-line comments.
"""

import json
import os
import re
import sys

# --------------------------------------------------------------------------- YAML subset


class YamlError(Exception):
    pass


def _strip_comment(text):
    """Drop a trailing ` # comment` that is outside quotes."""
    quote = None
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"':
                continue
        elif c in "\"'" and (i == 0 or text[i - 1] in " :-[{,"):
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] == " "):
            return text[:i].rstrip()
    return text.rstrip()


def _scalar(text):
    text = _strip_comment(text)
    if text == "[]":
        return []
    if text == "{}":
        return {}
    if text.startswith('"'):
        if not text.endswith('"') or len(text) < 2:
            raise YamlError("unterminated double-quoted scalar: %r" % text)
        body, out, i = text[1:-1], [], 0
        while i < len(body):
            c = body[i]
            if c == "\\":
                i += 1
                esc = body[i]
                out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\", "/": "/"}.get(esc))
                if out[-1] is None:
                    raise YamlError("unsupported escape \\%s" % esc)
            elif c == '"':
                raise YamlError("stray quote in %r" % text)
            else:
                out.append(c)
            i += 1
        return "".join(out)
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise YamlError("unterminated single-quoted scalar: %r" % text)
        return text[1:-1].replace("''", "'")
    if text.startswith(("[", "{", "&", "*", "!", "|", ">")):
        raise YamlError("unsupported YAML construct: %r" % text)
    return text


def _split_key(text):
    """'key: value' -> (key, value); 'key:' -> (key, ''); else None."""
    m = re.match(r"^([A-Za-z0-9_.\-/]+):(?:\s+(.*))?$", text)
    if not m:
        return None
    return m.group(1), (m.group(2) or "")


class _Reader:
    def __init__(self, text):
        self.lines = text.split("\n")
        self.i = 0

    def _peek(self):
        while self.i < len(self.lines):
            raw = self.lines[self.i]
            s = raw.strip()
            if s == "" or s.startswith("#") or s == "---":
                self.i += 1
                continue
            if "\t" in raw[: len(raw) - len(raw.lstrip())]:
                raise YamlError("tab indentation at line %d" % (self.i + 1))
            return len(raw) - len(raw.lstrip(" ")), raw.strip()
        return None

    def node(self, indent):
        p = self._peek()
        if p is None or p[0] < indent:
            return None
        n, text = p
        if text == "-" or text.startswith("- "):
            return self.seq(n)
        return self.map(n)

    def seq(self, n):
        out = []
        while True:
            p = self._peek()
            if p is None or p[0] != n or not (p[1] == "-" or p[1].startswith("- ")):
                return out
            rest = p[1][1:].lstrip(" ")
            if rest == "":
                self.i += 1
                out.append(self.node(n + 1))
            elif _split_key(rest) is not None:
                # "- key: v": the item is a mapping whose first key sits after the dash.
                item_indent = n + (len(p[1]) - len(rest))
                self.lines[self.i] = " " * item_indent + rest
                out.append(self.map(item_indent))
            else:
                self.i += 1
                out.append(_scalar(rest))

    def block_scalar(self, n, style):
        self.i += 1
        body, content_indent = [], None
        while self.i < len(self.lines):
            raw = self.lines[self.i]
            if raw.strip() == "":
                body.append("")
                self.i += 1
                continue
            ind = len(raw) - len(raw.lstrip(" "))
            if ind <= n:
                break
            if content_indent is None:
                content_indent = ind
            if ind < content_indent:
                raise YamlError("bad block scalar indentation at line %d" % (self.i + 1))
            body.append(raw[content_indent:])
            self.i += 1
        while body and body[-1] == "":
            body.pop()
        text = "\n".join(body)
        if style == "|":
            text += "\n"
        elif style != "|-":
            raise YamlError("unsupported block scalar style %r" % style)
        return text

    def map(self, n):
        out = {}
        while True:
            p = self._peek()
            if p is None or p[0] != n or p[1] == "-" or p[1].startswith("- "):
                return out
            kv = _split_key(p[1])
            if kv is None:
                raise YamlError("expected 'key: value' at line %d: %r" % (self.i + 1, p[1]))
            key, rest = kv
            if key in out:
                raise YamlError("duplicate key %r at line %d" % (key, self.i + 1))
            rest = _strip_comment(rest)
            if rest in ("|", "|-"):
                out[key] = self.block_scalar(n, rest)
                continue
            self.i += 1
            if rest == "":
                q = self._peek()
                if q is not None and q[0] > n:
                    out[key] = self.node(q[0])
                elif q is not None and q[0] == n and (q[1] == "-" or q[1].startswith("- ")):
                    out[key] = self.seq(n)
                else:
                    out[key] = None
            else:
                out[key] = _scalar(rest)


def load_yaml(text):
    r = _Reader(text)
    value = r.node(0)
    if r._peek() is not None:
        raise YamlError("unparsed content at line %d: %r" % (r.i + 1, r.lines[r.i]))
    return value


# --------------------------------------------------------------------------- extract


def extract(src, out):
    """Plain rule file = the lines under the top-level `spec:`, dedented by two spaces."""
    with open(src) as f:
        text = f.read()
    doc = load_yaml(text)
    if doc.get("apiVersion") != "monitoring.coreos.com/v1" or doc.get("kind") != "PrometheusRule":
        die("%s: not a monitoring.coreos.com/v1 PrometheusRule" % src)
    lines = text.split("\n")
    try:
        start = lines.index("spec:") + 1
    except ValueError:
        die("%s: no top-level 'spec:' line" % src)
    body = []
    for line in lines[start:]:
        if line and not line.startswith(" ") and not line.startswith("#"):
            break  # next top-level key
        if line.strip() and not line.startswith("  ") and not line.startswith("#"):
            die("%s: spec line not indented by two spaces: %r" % (src, line))
        body.append(line[2:] if line.startswith("  ") else line)
    plain = "# Generated from %s by tests/prometheus/rulestool.py extract; do not edit.\n" % src
    plain += "\n".join(body).rstrip("\n") + "\n"
    # The generated file must say exactly what the PrometheusRule's spec says.
    if load_yaml(plain) != doc["spec"]:
        die("extracted rules differ from the PrometheusRule's spec (indentation?)")
    with open(out, "w") as f:
        f.write(plain)


# --------------------------------------------------------------------------- lint

RUNBOOK_PREFIX = "https://github.com/hyperv-layered/hyperv-layered/blob/main/docs/runbooks/"
NAME_RE = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")


def rules_of(path):
    with open(path) as f:
        doc = load_yaml(f.read())
    out = []
    for g in doc["groups"]:
        for r in g["rules"]:
            out.append((g["name"], r))
    return out


def lint(rules_path, root, tests):
    errors = []
    rules = rules_of(rules_path)
    records = sorted({r["record"] for _, r in rules if "record" in r})
    alerts = sorted({r["alert"] for _, r in rules if "alert" in r})
    for group, r in rules:
        if "record" in r:
            if not NAME_RE.match(r["record"]):
                errors.append("record %s: not level:metric:operations" % r["record"])
            continue
        name = r["alert"]
        ann, labels = r.get("annotations") or {}, r.get("labels") or {}
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                errors.append("alert %s: no %s annotation" % (name, key))
        if labels.get("severity") not in ("critical", "warning", "info"):
            errors.append("alert %s: severity label missing or unknown" % name)
        if not r.get("for"):
            errors.append("alert %s: no 'for:'" % name)
        if ann.get("runbook_url") != RUNBOOK_PREFIX + name + ".md":
            errors.append("alert %s: runbook_url must be %s%s.md" % (name, RUNBOOK_PREFIX, name))
        runbook = os.path.join(root, "docs", "runbooks", name + ".md")
        if not os.path.isfile(runbook):
            errors.append("alert %s: %s does not exist" % (name, runbook))
        else:
            with open(runbook) as f:
                text = f.read().lower()
            for section in ("## meaning", "## impact", "## diagnosis", "## mitigation"):
                if section not in text:
                    errors.append("runbook %s: no '%s' section" % (runbook, section))

    tested_exprs, alert_pos, alert_neg = [], set(), set()
    for t in tests:
        with open(t) as f:
            doc = load_yaml(f.read())
        for case in doc.get("tests") or []:
            for e in case.get("promql_expr_test") or []:
                tested_exprs.append(e["expr"])
            for a in case.get("alert_rule_test") or []:
                (alert_pos if a.get("exp_alerts") else alert_neg).add(a["alertname"])
    for rec in records:
        pat = re.compile(r"(?<![A-Za-z0-9_:])" + re.escape(rec) + r"(?![A-Za-z0-9_:])")
        if not any(pat.search(e) for e in tested_exprs):
            errors.append("record %s: no promql_expr_test evaluates it" % rec)
    for a in alerts:
        if a not in alert_pos:
            errors.append("alert %s: no alert_rule_test expects it to fire" % a)
        if a not in alert_neg:
            errors.append("alert %s: no alert_rule_test expects it NOT to fire" % a)
    for e in errors:
        print("lint: " + e, file=sys.stderr)
    print("lint: %d recording rules, %d alerts (%d alert rules), %d test files: %s"
          % (len(records), len(alerts), sum(1 for _, r in rules if "alert" in r), len(tests),
             "FAILED" if errors else "ok"))
    return 1 if errors else 0


# --------------------------------------------------------------------------- dashboard

# Raw series the dashboard may use besides the recording rules (agent and KSM metrics).
KNOWN_RAW = {
    "up",
    "mshv_node_agent_capable",
    "mshv_node_agent_info",
    "mshv_node_agent_hv_build_supported",
    "mshv_node_agent_device_accessible",
    "mshv_node_agent_device_plugin_state",
    "mshv_node_agent_device_plugin_healthy_devices",
    "mshv_node_agent_device_access_total",
    "mshv_node_agent_device_plugin_registrations_total",
    # speed-up (issue 17): the agent's last bench and guest-run verification
    "mshv_node_agent_bench_seconds",
    "mshv_node_agent_bench_guest_compute_ratio",
    "mshv_node_agent_bench_last_run_timestamp_seconds",
    "mshv_node_agent_bench_runs_total",
    "mshv_node_agent_guest_verified",
    "mshv_node_agent_guest_verifications_total",
    "kube_node_status_allocatable",
    "kube_node_labels",
}

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan", "atan2",
}


def promql_series(expr):
    """Metric names an expression selects (functions, keywords, label lists dropped)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"'(?:[^'\\]|\\.)*'", "''", e)
    e = re.sub(r"`[^`]*`", "``", e)
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers (and Grafana's ${var})
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$[A-Za-z_][A-Za-z0-9_]*", " ", e)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS or re.match(r"^\d", word):
            continue
        names.add(word)
    return names


def template_query_expr(q):
    """Grafana's label_values(EXPR, label) -> EXPR; anything else is PromQL already."""
    m = re.match(r"^\s*label_values\((.*),\s*[A-Za-z_]+\s*\)\s*$", q)
    return m.group(1) if m else q


def dashboard(dash_path, rules_path):
    errors = []
    with open(dash_path) as f:
        try:
            dash = json.load(f)
        except json.JSONDecodeError as e:
            print("dashboard: %s is not valid JSON: %s" % (dash_path, e), file=sys.stderr)
            return 1
    recorded = {r["record"] for _, r in rules_of(rules_path) if "record" in r}
    exprs = []

    def walk(node, where):
        if isinstance(node, dict):
            if "expr" in node and isinstance(node["expr"], str):
                exprs.append((where, node["expr"]))
            # Grafana query variables (not datasource/custom ones, whose `query` is no PromQL)
            if where.startswith("templating") and node.get("type") == "query":
                q = node.get("query")
                if isinstance(q, dict):
                    q = q.get("query")
                if isinstance(q, str):
                    exprs.append((where, template_query_expr(q)))
            for k, v in node.items():
                walk(v, where + "." + k if where else k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, "%s[%d]" % (where, i))

    walk(dash, "")
    if not exprs:
        errors.append("no queries found")
    if not dash.get("title") or not dash.get("uid"):
        errors.append("dashboard needs a title and uid")
    for p in dash.get("panels", []):
        if p.get("type") != "row" and not p.get("targets"):
            errors.append("panel %r has no targets" % p.get("title"))
    used = set()
    for where, e in exprs:
        for name in promql_series(e):
            used.add(name)
            if name not in recorded and name not in KNOWN_RAW:
                errors.append("%s: %r is neither a recording rule nor a known raw metric" % (where, name))
    for e in errors:
        print("dashboard: " + e, file=sys.stderr)
    print("dashboard: %d queries, %d series (%d recorded, %d raw): %s"
          % (len(exprs), len(used), len(used & recorded), len(used - recorded),
             "FAILED" if errors else "ok"))
    return 1 if errors else 0


# --------------------------------------------------------------------------- selftest


def selftest():
    doc = load_yaml(
        "a: 1\n"
        "b:\n"
        "  - name: x   # c\n"
        "    rules:\n"
        "      - record: r\n"
        "        expr: |\n"
        "          sum(x{a=\"#\"})\n"
        "          / 2\n"
        "        labels:\n"
        "          q: \"0.5\"\n"
        "  - 'it''s'\n"
        "c: []\n"
        "d: \"say \\\"hi\\\" {{ $value }}\"\n"
        "e:\n"
        "- 1\n"
    )
    want = {
        "a": "1",
        "b": [{"name": "x", "rules": [{"record": "r", "expr": 'sum(x{a="#"})\n/ 2\n',
                                       "labels": {"q": "0.5"}}]}, "it's"],
        "c": [],
        "d": 'say "hi" {{ $value }}',
        "e": ["1"],
    }
    assert doc == want, doc
    assert promql_series('sum by (node) (rate(a_total{x="y"}[5m])) / on(node) b:c:d or vector(0)') == {"a_total", "b:c:d"}
    assert promql_series(template_query_expr("label_values(mshv_node_agent_capable{x=~\"$a\"}, node)")) == {"mshv_node_agent_capable"}
    for bad in ("a: [1]\n", "a: \"x\n", "a:\n\tb: 1\n", "a: 1\na: 2\n"):
        try:
            load_yaml(bad)
        except YamlError:
            continue
        raise AssertionError("accepted %r" % bad)
    print("selftest: ok")
    return 0


def die(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def main(argv):
    if len(argv) >= 3 and argv[0] == "extract":
        extract(argv[1], argv[2])
        return 0
    if len(argv) >= 4 and argv[0] == "lint":
        return lint(argv[1], argv[2], argv[3:])
    if len(argv) == 3 and argv[0] == "dashboard":
        return dashboard(argv[1], argv[2])
    if argv == ["selftest"]:
        return selftest()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
