#!/usr/bin/env python3
"""Regenerate the README's "The demo's figures" block from a real run (issue 15).

Runs the demo (`inferencelab bench`, no arguments, into a temporary directory) and `convert`
on the same CSV, and prints the block the README quotes: the demo's cache sections as the
binary printed them, and the two prompt-token counts with what each one counts. With --write
it replaces the block between the README's markers; nothing in it is typed by hand.

    cargo build --release && python3 scripts/readme_numbers.py [--write] [--binary PATH]
"""

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = "<!-- BEGIN demo-figures: written by scripts/readme_numbers.py -->"
END = "<!-- END demo-figures -->"
# the demo's sections that carry cache figures, by their header text
SECTIONS = ("KV cache", "Server /metrics", "Attribution", "Hit tokens")


def run(cmd):
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
    return p.stdout


def sections(screen):
    """The lines of the demo's cache sections (a header line starts each section)."""
    out, keep = [], False
    for line in screen.splitlines():
        if re.match(r"^[-=]{3,}", line) and not re.match(r"^[-=]+$", line):
            keep = any(s in line for s in SECTIONS)
        if keep and not re.match(r"^[-=]+$", line):
            out.append(line.rstrip())
    return out


def figure(lines, label):
    for line in lines:
        if line.startswith(label):
            return line[len(label):].split()[0]
    sys.exit(f"the demo printed no {label!r} line")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/inferencelab"))
    ap.add_argument("--write", action="store_true", help="replace the block in README.md")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        screen = run([args.binary, "bench", "-q", "--output-dir", os.path.join(tmp, "demo")])
        conv = run([args.binary, "convert", "data/test_data.csv", "qwen-8b",
                    "--output-dir", os.path.join(tmp, "logs")])
    load_after = os.getloadavg()[0]
    lines = sections(screen)
    duration = figure(screen.splitlines(), "Benchmark duration (s):")
    m = re.search(r"(\d+) requests, (\d+) prompt tokens", conv)
    if not m:
        sys.exit(f"convert printed no prompt-token count:\n{conv}")
    convert_tokens = int(m.group(2))
    demo_tokens = int(figure(lines, "Prompt tokens:"))
    block = [
        BEGIN,
        "",
        "```",
        *lines,
        "```",
        "",
        f"One CSV, two token counts: `convert` counts {convert_tokens:,} prompt tokens (the "
        "o200k_base tokenizer over the recorded answers), the demo's server "
        f"{demo_tokens:,} (the emulator's word tokenizer, one token per word, over the answers "
        "it generated itself, which the next turns carry). Measured "
        f"{datetime.date.today().isoformat()} on {os.cpu_count()} cores, load average "
        f"{load_before:.1f} before and {load_after:.1f} after; the replay took {duration} s "
        "(the emulated GPU keeps pace only on an idle machine: under load requests queue, "
        "fewer blocks stay cached and TTFT grows).",
        "",
        END,
    ]
    text = "\n".join(block)
    if not args.write:
        print(text)
        return
    path = os.path.join(ROOT, "README.md")
    readme = open(path, encoding="utf-8").read()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        sys.exit(f"README.md has no {BEGIN!r} ... {END!r} block")
    open(path, "w", encoding="utf-8").write(pattern.sub(lambda _: text, readme, count=1))
    print(f"README.md: demo figures rewritten ({len(lines)} lines)")


if __name__ == "__main__":
    main()
