#!/usr/bin/env python3
"""The markdown table of docs/QUANTIZE.md from scripts/quant-table.sh's JSON lines.

    python3 scripts/quant-table-md.py docs/quant-table.jsonl
"""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1])]
print("| model | type | imatrix | size MiB | PPL (F16) | KLD mean | KLD 99% | same top |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['model']} | {r['type']} | {r['imatrix']} | {r['bytes'] / 1048576:.1f} | {r['ppl']:.3f} ({r['ppl_f16']:.3f}) "
          f"| {r['kld_mean']:.4f} | {r['kld_p99']:.3f} | {r['same_top']:.1f}% |")
print()
print("| model | type | KLD, general vs none | KLD, code vs none | KLD, code vs general |")
print("|---|---|---|---|---|")
by = {(r["model"], r["type"], r["imatrix"]): r["kld_mean"] for r in rows}
for (m, t, im), none in by.items():
    if im != "none" or (m, t, "code") not in by:
        continue
    g, c = by[(m, t, "general")], by[(m, t, "code")]
    print(f"| {m} | {t} | {100 * (g / none - 1):+.1f}% | {100 * (c / none - 1):+.1f}% | {100 * (c / g - 1):+.1f}% |")
