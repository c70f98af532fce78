#!/usr/bin/env python3
"""Line counts of Rust files and their longest functions (signature to closing brace).

    python3 scripts/fn_lengths.py [--top N] FILE|REV:FILE ...

A `REV:FILE` argument is read with `git show` (e.g. `HEAD~3:crates/sim/src/driver.rs`), so a
file can be measured before and after a change. Braces inside string and char literals and
`//` comments are ignored; raw strings and block comments are not parsed (good enough for
this code base, which keeps them brace-free)."""
import os
import re
import subprocess
import sys

FN = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)')
NOISE = re.compile(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])\'|//.*')


def read(arg):
    if os.path.exists(arg) or ':' not in arg:
        with open(arg, encoding='utf-8') as f:
            return f.read()
    return subprocess.run(['git', 'show', arg], check=True, capture_output=True, text=True).stdout


def functions(name, text):
    lines = text.split('\n')
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, opened = 0, False
        for j in range(i, len(lines)):
            code = NOISE.sub('', lines[j])
            depth += code.count('{') - code.count('}')
            opened |= '{' in code
            if opened and depth <= 0:
                yield j - i + 1, f'{name}::{m.group(6)}'
                break
            if not opened and code.rstrip().endswith(';'):
                break  # a trait method without a body


def main(argv):
    top = 10
    if argv[:1] == ['--top']:
        top, argv = int(argv[1]), argv[2:]
    fns = []
    for arg in argv:
        text = read(arg)
        print(f'{text.count(chr(10)):6} lines  {arg}')
        fns += functions(arg, text)
    print()
    for n, f in sorted(fns, reverse=True)[:top]:
        print(f'{n:6} lines  {f}')


if __name__ == '__main__':
    main(sys.argv[1:])
