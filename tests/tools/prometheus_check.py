#!/usr/bin/env python3
"""prometheus_check.py — a strict checker of the Prometheus text exposition format (0.0.4).

    prometheus_check.py FILE        checks FILE ("-" for stdin); prints one line per problem
                                    and exits 1 when there is any, else prints "ok N families"
    prometheus_check.py --self-test runs the checker on built-in good and bad documents

Debian 12's prometheus package would give `promtool check metrics`, but it is a 100 MB
dependency for one check, so the integration tests use this instead (and promtool as well when it
happens to be installed). It is stricter than Prometheus's own parser, which accepts much that
its documentation calls wrong:

  - the text is UTF-8, every line ends with "\\n" (the last one too), no "\\r", no blank lines;
  - "# HELP name text" and "# TYPE name type" at most once per family, both before its first
    sample, TYPE one of counter, gauge, histogram, summary, untyped; every family has both;
  - a family's samples are contiguous (no other family in between);
  - names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* without a leading
    "__", a label at most once per sample, label values only with the escapes \\\\ \\" \\n;
  - values parse as Go's ParseFloat does (NaN, +Inf, -Inf included); an optional integer timestamp;
  - no two samples with the same name and label set;
  - counters: the family name ends in _total and each sample is named exactly that;
    gauges and untyped: samples named exactly as the family; summaries: name, name_sum, name_count;
  - histograms: only name_bucket (with an "le" label), name_sum and name_count; for each label set
    the buckets' le values strictly increase and end with "+Inf", their counts never decrease, and
    the +Inf bucket equals name_count; name_sum and name_count are present; "le" nowhere else;
  - conventions promtool's linter checks: snake_case names (no capitals), _total only on counters,
    base units (no _milliseconds, _microseconds, _minutes, _hours, _bytes_total is fine).
"""
import math
import re
import sys

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
NON_BASE_UNITS = ("_milliseconds", "_microseconds", "_nanoseconds", "_minutes", "_hours",
                  "_days", "_kilobytes", "_megabytes", "_percent")


class Problems:
    def __init__(self):
        self.lines = []

    def add(self, number, text):
        self.lines.append(f"line {number}: {text}")


def parse_value(text):
    if text in ("NaN", "+Inf", "-Inf", "Inf", "+inf", "-inf"):
        return float(text.replace("inf", "Inf").replace("Inf", "inf"))
    if not FLOAT.fullmatch(text):
        raise ValueError(f"'{text}' is not a number")
    return float(text)


def parse_label_value(text, position):
    """Reads a quoted label value at text[position] (the opening quote); returns (value, next)."""
    if position >= len(text) or text[position] != '"':
        raise ValueError("a label value must be in double quotes")
    out = []
    position += 1
    while position < len(text):
        character = text[position]
        if character == '"':
            return "".join(out), position + 1
        if character == "\\":
            if position + 1 >= len(text) or text[position + 1] not in '\\"n':
                raise ValueError("a label value may only escape \\\\, \\\" and \\n")
            out.append({"\\": "\\", '"': '"', "n": "\n"}[text[position + 1]])
            position += 2
            continue
        out.append(character)
        position += 1
    raise ValueError("unterminated label value")


def parse_labels(text, position):
    """Reads {a="b",...} at text[position]; returns (dict, next)."""
    labels = {}
    position += 1
    while True:
        if position < len(text) and text[position] == "}":
            return labels, position + 1
        match = LABEL_NAME.match(text, position)
        if not match:
            raise ValueError("a label name must match [a-zA-Z_][a-zA-Z0-9_]*")
        name = match.group(0)
        if name.startswith("__"):
            raise ValueError(f"label name {name} is reserved (leading __)")
        if name in labels:
            raise ValueError(f"label {name} given twice")
        position = match.end()
        if position >= len(text) or text[position] != "=":
            raise ValueError(f"'=' expected after label {name}")
        value, position = parse_label_value(text, position + 1)
        labels[name] = value
        if position < len(text) and text[position] == ",":
            position += 1
        elif position >= len(text) or text[position] != "}":
            raise ValueError("',' or '}' expected after a label value")


def parse_sample(line):
    match = NAME.match(line)
    if not match:
        raise ValueError("a sample must start with a metric name")
    name = match.group(0)
    position = match.end()
    labels = {}
    if position < len(line) and line[position] == "{":
        labels, position = parse_labels(line, position)
    rest = line[position:]
    if not rest.startswith(" "):
        raise ValueError("one space expected before the value")
    fields = rest[1:].split(" ")
    if len(fields) not in (1, 2) or "" in fields:
        raise ValueError("expected 'value' or 'value timestamp' after the labels")
    value = parse_value(fields[0])
    if len(fields) == 2 and not re.fullmatch(r"-?\d+", fields[1]):
        raise ValueError(f"timestamp '{fields[1]}' is not an integer")
    return name, labels, value


class Family:
    def __init__(self, name):
        self.name = name
        self.type = None
        self.help = None
        self.samples = []  # (line number, name, labels, value)
        self.closed = False


def family_of(sample_name, families, current):
    """The family a sample belongs to: the current one when its name fits, else by name."""
    candidates = [sample_name]
    for suffix in ("_bucket", "_sum", "_count"):
        if sample_name.endswith(suffix):
            candidates.append(sample_name[: -len(suffix)])
    if current is not None and current.name in candidates:
        return current
    for candidate in candidates:
        if candidate in families:
            return families[candidate]
    return None


def check_names(family, problems, number):
    name = family.name
    if name != name.lower():
        problems.add(number, f"{name}: metric names are snake_case (no capitals)")
    if family.type == "counter" and not name.endswith("_total"):
        problems.add(number, f"{name}: a counter's name must end in _total")
    if family.type != "counter" and name.endswith("_total"):
        problems.add(number, f"{name}: only counters end in _total")
    for unit in NON_BASE_UNITS:
        if unit in name:
            problems.add(number, f"{name}: use base units (seconds, bytes), not {unit[1:]}")


def check_histogram(family, problems):
    series = {}
    for number, name, labels, value in family.samples:
        key_labels = {k: v for k, v in labels.items() if k != "le"}
        key = tuple(sorted(key_labels.items()))
        entry = series.setdefault(key, {"buckets": [], "sum": None, "count": None, "line": number})
        if name == family.name + "_bucket":
            if "le" not in labels:
                problems.add(number, f"{name}: a bucket needs an le label")
                continue
            try:
                bound = parse_value(labels["le"])
            except ValueError as error:
                problems.add(number, f"{name}: le: {error}")
                continue
            entry["buckets"].append((number, bound, value))
        elif name == family.name + "_sum":
            entry["sum"] = value
        elif name == family.name + "_count":
            entry["count"] = value
        else:
            problems.add(number, f"{name}: not a sample of histogram {family.name}")
        if name != family.name + "_bucket" and "le" in labels:
            problems.add(number, f"{name}: le belongs on buckets only")
    for key, entry in series.items():
        where = entry["line"]
        label_text = ",".join(f'{k}="{v}"' for k, v in key) or "no labels"
        buckets = entry["buckets"]
        if not buckets or not math.isinf(buckets[-1][1]) or buckets[-1][1] < 0:
            problems.add(where, f"{family.name} ({label_text}): the last bucket must be le=\"+Inf\"")
        for (line_a, bound_a, count_a), (line_b, bound_b, count_b) in zip(buckets, buckets[1:]):
            if not bound_b > bound_a:
                problems.add(line_b, f"{family.name}: le values must strictly increase")
            if count_b < count_a:
                problems.add(line_b, f"{family.name}: bucket counts must not decrease")
        if entry["sum"] is None or entry["count"] is None:
            problems.add(where, f"{family.name} ({label_text}): _sum and _count are required")
        elif buckets and buckets[-1][2] != entry["count"]:
            problems.add(where, f"{family.name} ({label_text}): the +Inf bucket must equal _count")


def check_family_samples(family, problems):
    allowed = {
        "counter": {family.name},
        "gauge": {family.name},
        "untyped": {family.name},
        "summary": {family.name, family.name + "_sum", family.name + "_count"},
    }
    if family.type == "histogram":
        check_histogram(family, problems)
        return
    for number, name, labels, _ in family.samples:
        if name not in allowed.get(family.type, {family.name}):
            problems.add(number, f"{name}: not a sample of {family.type} {family.name}")
        if "le" in labels:
            problems.add(number, f"{name}: the le label belongs to histogram buckets")
        if family.type == "counter" and _ < 0:
            problems.add(number, f"{name}: a counter cannot be negative")


def handle_comment(line, number, families, state, problems):
    parts = line.split(" ", 3)
    if len(parts) < 2 or parts[1] not in ("HELP", "TYPE"):
        return  # a plain comment
    if len(parts) < 3 or not NAME.fullmatch(parts[2]):
        problems.add(number, f"# {parts[1]} needs a valid metric name")
        return
    name = parts[2]
    family = families.get(name)
    if family is None:
        family = families[name] = Family(name)
    elif family.samples:
        problems.add(number, f"# {parts[1]} {name} after its samples")
    if state["current"] is not None and state["current"] is not family:
        state["current"].closed = True
    if family.closed:
        problems.add(number, f"{name}: its lines are not contiguous")
    state["current"] = family
    text = parts[3] if len(parts) == 4 else ""
    if parts[1] == "HELP":
        if family.help is not None:
            problems.add(number, f"# HELP {name} given twice")
        if re.search(r"\\[^\\n]", text.replace("\\\\", "")):
            problems.add(number, f"# HELP {name}: only \\\\ and \\n may be escaped")
        family.help = text
    else:
        if family.type is not None:
            problems.add(number, f"# TYPE {name} given twice")
        if text not in TYPES:
            problems.add(number, f"# TYPE {name}: '{text}' is not a metric type")
        family.type = text


def handle_sample(line, number, families, state, seen, problems):
    try:
        name, labels, value = parse_sample(line)
    except ValueError as error:
        problems.add(number, str(error))
        return
    family = family_of(name, families, state["current"])
    if family is None:
        problems.add(number, f"{name}: sample without # TYPE")
        family = families[name] = Family(name)
    if state["current"] is not family:
        if state["current"] is not None:
            state["current"].closed = True
        if family.closed:
            problems.add(number, f"{family.name}: its samples are not contiguous")
        state["current"] = family
    key = (name, tuple(sorted(labels.items())))
    if key in seen:
        problems.add(number, f"{name}: the same series appears twice")
    seen.add(key)
    family.samples.append((number, name, labels, value))


def check(text):
    problems = Problems()
    if not text:
        problems.add(0, "empty document")
        return problems.lines, 0
    if not text.endswith("\n"):
        problems.add(text.count("\n") + 1, "the last line must end with a newline")
    if "\r" in text:
        problems.add(0, "carriage return found")
    families = {}
    state = {"current": None}
    seen = set()
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        if line == "":
            problems.add(number, "blank line")
        elif line.startswith("#"):
            handle_comment(line, number, families, state, problems)
        else:
            handle_sample(line, number, families, state, seen, problems)
    for family in families.values():
        if family.type is None:
            problems.add(0, f"{family.name}: no # TYPE line")
            family.type = "untyped"
        if family.help is None:
            problems.add(0, f"{family.name}: no # HELP line")
        check_names(family, problems, 0)
        check_family_samples(family, problems)
    return problems.lines, len(families)


GOOD = """# HELP a_total Requests.
# TYPE a_total counter
a_total{code="200",path="/x"} 3
a_total{code="500",path="/x\\\\y\\"z\\n"} 0
# HELP b_seconds Latency.
# TYPE b_seconds histogram
b_seconds_bucket{le="0.5"} 1
b_seconds_bucket{le="1"} 2
b_seconds_bucket{le="+Inf"} 2
b_seconds_sum 0.75
b_seconds_count 2
# HELP c Up.
# TYPE c gauge
c -1.5e3 1700000000000
"""

BAD = {
    "no newline at end": GOOD.rstrip("\n"),
    "counter without _total": GOOD.replace("a_total", "a"),
    "gauge with _total": GOOD.replace("# TYPE a_total counter", "# TYPE a_total gauge"),
    "missing +Inf": GOOD.replace('b_seconds_bucket{le="+Inf"} 2\n', ""),
    "+Inf differs from count": GOOD.replace("b_seconds_count 2", "b_seconds_count 3"),
    "decreasing buckets": GOOD.replace('b_seconds_bucket{le="1"} 2', 'b_seconds_bucket{le="1"} 0'),
    "le out of order": GOOD.replace('le="1"', 'le="0.25"'),
    "duplicate series": GOOD.replace("c -1.5e3", 'c 1\nc -1.5e3'),
    "type after sample": GOOD.replace("# TYPE c gauge\nc -1.5e3 1700000000000\n",
                                      "c -1.5e3\n# TYPE c gauge\n"),
    "not contiguous": GOOD + "a_total{code=\"404\",path=\"/x\"} 1\n",
    "bad escape": GOOD.replace('/x\\\\y', '/x\\y'),
    "bad value": GOOD.replace("c -1.5e3", "c one"),
    "no type": GOOD.replace("# TYPE c gauge\n", ""),
    "no help": GOOD.replace("# HELP c Up.\n", ""),
    "bad type": GOOD.replace("# TYPE c gauge", "# TYPE c gage"),
    "reserved label": GOOD.replace('code="200"', '__code="200"'),
    "repeated label": GOOD.replace('code="200",', 'code="200",code="201",'),
    "blank line": GOOD.replace("# HELP c", "\n# HELP c"),
    "milliseconds": GOOD.replace("b_seconds", "b_milliseconds"),
    "capitals": GOOD.replace("c Up.", "C Up.").replace("TYPE c ", "TYPE C ").replace("\nc -", "\nC -"),
    "two spaces": GOOD.replace("c -1.5e3", "c  -1.5e3"),
    "negative counter": GOOD.replace('path="/x"} 3', 'path="/x"} -3'),
    "le on a counter": GOOD.replace('code="200"', 'le="200"'),
    "sum missing": GOOD.replace("b_seconds_sum 0.75\n", ""),
    "unterminated label": GOOD.replace('code="200",path="/x"}', 'code="200,path=/x}'),
}


def self_test():
    failures = 0
    problems, _ = check(GOOD)
    if problems:
        failures += 1
        print("not ok - the good document is accepted: " + "; ".join(problems))
    else:
        print("ok - the good document is accepted")
    for name, text in BAD.items():
        problems, _ = check(text)
        if problems:
            print(f"ok - refuses: {name}")
        else:
            failures += 1
            print(f"not ok - refuses: {name}")
    return failures


def main(arguments):
    if arguments == ["--self-test"]:
        return 1 if self_test() else 0
    if len(arguments) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    source = sys.stdin.buffer if arguments[0] == "-" else open(arguments[0], "rb")
    with source:
        data = source.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        print("not UTF-8")
        return 1
    problems, count = check(text)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"ok {count} families")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
