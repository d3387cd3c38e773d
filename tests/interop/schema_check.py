"""Validates bodies against `bansync schema` with the jsonschema package.

usage: schema_check.py SCHEMA.json BODIES.jsonl
Every line of BODIES must validate; the script also checks that the schema
itself is a valid draft 2020-12 schema and that it refuses a body without
its data. Prints one line per body type checked; exits 1 on any failure.
"""
import json
import sys

from jsonschema import Draft202012Validator

schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
seen = {}
bad = 0
for line in open(sys.argv[2]):
    body = json.loads(line)
    errors = sorted(v.iter_errors(body), key=lambda e: e.path)
    if errors:
        bad += 1
        print("INVALID", body.get("type"), [e.message for e in errors])
    seen[body.get("type")] = seen.get(body.get("type"), 0) + 1
if v.is_valid({"type": "ban.added", "timestamp": "2026-11-21T10:00:03Z"}):
    print("INVALID: a body without data was accepted")
    bad += 1
first = json.loads(open(sys.argv[2]).readline())
if v.is_valid(dict(first, type="ban.nope")):
    print("INVALID: a body of an unknown type was accepted")
    bad += 1
for t, n in sorted(seen.items()):
    print(t, n)
sys.exit(1 if bad else 0)
