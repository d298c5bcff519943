#!/usr/bin/env python3
"""Writes functions.exact from functions.json: each output's value on one line, numbers as
Terraform wrote them (digit for digit), objects with sorted keys; tests/golden.rs writes
veeps' values the same way and compares the text."""
import json, sys

class Num(str):
    pass

def canon(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, Num):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(canon(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + canon(v[k]) for k in sorted(v)) + "}"
    raise TypeError(type(v))

d = json.load(open("functions.json"), parse_float=Num, parse_int=Num)
with open("functions.exact", "w") as f:
    for name in sorted(d):
        f.write(name + "\t" + canon(d[name]["value"]) + "\n")
