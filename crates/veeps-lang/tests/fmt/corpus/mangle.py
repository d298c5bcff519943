#!/usr/bin/env python3
"""The corpus' files mangled as tests/fmt_corpus.rs mangles them: every line's indentation
removed, the spaces around `=`, after `,`, inside `{ }` and before trailing comments
squeezed. Prints the mangled text of the file named."""
import re, sys

s = open(sys.argv[1]).read()
m = "\n".join(l.lstrip(" \t") for l in s.split("\n"))
m = m.replace(" = ", "=").replace(", ", ",").replace("{ ", "{").replace(" }", "}")
m = re.sub(r"  +#", " #", m)
sys.stdout.write(m)
