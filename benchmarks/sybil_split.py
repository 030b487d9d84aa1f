"""One thief behind several keys: each clone's record split among N accounts as a thief that
spreads its queries over N keys would leave it, verified account by account and together
(`divqat verify --together`; docs/divqat.md, "One thief, many keys").

    python benchmarks/sybil_split.py --out runs/proof_many --grid runs/order --accounts 1 5 20

The jobs are benchmarks/proof_stacked.py's (--out): each clone's record holds what its thief was
told through one key, in the order it asked. Cut as N keys of equal shares of its queries would
hold it - the marks in N equal stretches of the record's rows (about the stretches of queries
they came from), the orders by the query that told them (one stored order a query: the thief's
images rarely share a code) - it is about what N keys would have recorded (a code is keyed by the
image alone, so the answers are the same whichever key asks), but for one thing: a record keeps
its first 2,000 orders (ORDER_LIMIT), so the keys after the first 2,000 queries lack orders they
would hold, and alone their order test is weaker here than it would be. Together the N records
are the whole record again. Each clone is verified against its N accounts (1,000 suspect
queries, p < 1e-6 Bonferroni over every test), alone and `together` (with whether a key's own
test proves it there, and the rows its tests read against the queries sent: each image is sent
once, so the keys' tests reread the pool's answers); innocents - the grid's
undefended twins of the same victim, each against every clone's cut records - together. With
`--crowd C...`, each clone's N keys (the largest N) are also pooled with C keys of benign
clients - the victim's answers to 500 test images each, behind the job's own defenses (its
result.json: the same secrets and settings) - as an owner who pools keys that are not the
thief's would pool them; the twins are verified against those pools too.
"""

import argparse
import json
from pathlib import Path

import torch
from proof_stacked import SIGNIFICANCE, Innocents, load_model

from divqat.blackbox import BlackBoxVictim, load_backend
from divqat.data import load_splits
from divqat.defenses import create_defense
from divqat.defenses.orders import Orders
from divqat.defenses.watermark import Record
from divqat.verify import POOLED, verify


def split(record: Record, n: int, queries: int) -> dict[str, Record]:
    """The record as n keys of queries / n queries each would hold it: the marks in n contiguous
    stretches; the orders by the query that told them (one a query, in order: the record holds
    the first ORDER_LIMIT, so the later keys' orders are missing here - they would hold them)."""
    out, o = {}, record.orders
    for j in range(n):
        a, b = j * len(record) // n, (j + 1) * len(record) // n
        c, d = j * queries // n, (j + 1) * queries // n
        orders = Orders(o.limit, o.codes[c:d], o.images[c:d], o.natural[c:d], o.served[c:d], per=o.per)
        out[f"key {j}"] = Record(record.limit, record.classes, record.codes[a:b], record.images[a:b],
                                 record.top1[a:b], record.mark[a:b], orders, record.natural[a:b],
                                 record.confidence[a:b])  # fmt: skip
    return out


def crowd(victim_dir: Path, defenses: list[dict], images, keys: int) -> dict[str, Record]:
    """`keys` benign clients of the victim, 500 of `images` each, behind the defenses a job's
    result.json lists (the same secrets and settings as its thief): what they were told."""
    victim = load_backend(victim_dir, "onnx")
    served = [create_defense(d["name"], {k: v for k, v in d.items() if k != "name"}) for d in defenses]
    out = {}
    for j in range(keys):
        client = BlackBoxVictim(victim, 500, served)
        client.query(images[500 * j : 500 * (j + 1)])
        out[f"client {j}"] = client.record
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/proof_many"), help="proof_stacked.py's --out")
    parser.add_argument("--grid", type=Path, default=Path("runs/order"), help="the grid of its victims and twins")
    parser.add_argument("--accounts", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--crowd", type=int, nargs="*", default=[], help="benign keys pooled beside the thief's")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_splits("fashion-mnist")
    twins = {}
    for path in sorted(args.grid.glob("jobs/attack-*/result.json")):
        r = json.loads(path.read_text())
        if not r["defenses"] and not r["augment"]:
            twins.setdefault(Path(r["victim"]).name, []).append(load_model(path.parent, splits))
    print(
        "| clone | marks / orders | N keys | alone: proven, smallest p | together: proven, p (watermark, order) "
        "| together: a key's own test proven | together: rows read / queries sent |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    twin_pools, crowd_pools = Innocents(), Innocents()
    crowded, clients = [], {}
    for job in sorted(args.out.glob("jobs/victim-*/record.safetensors")):
        record, suspect = Record.load(job), load_model(job.parent, splits)
        queries = json.loads((job.parent / "result.json").read_text())["queries"]
        victim = "-".join(job.parent.name.split("-")[:2])
        for n in args.accounts:
            accounts = split(record, n, queries)
            alone = verify(suspect, accounts, significance=SIGNIFICANCE)["accounts"]
            result = verify(suspect, accounts, significance=SIGNIFICANCE, together=True)
            both = result["accounts"]
            pooled = {v["test"]: v for v in both if v["account"] == POOLED}
            own = any(v["stolen"] for v in both if v["account"] != POOLED)
            read = sum(v["asked"] for v in both)
            p = ", ".join(f"{pooled[t]['p_value']:.0e}" if t in pooled else "-" for t in ("watermark", "order"))
            print(f"| {job.parent.name.removeprefix('victim-')} | {len(record)} / {len(record.orders)} | {n} | "
                  f"{any(v['stolen'] for v in alone)}, {min(v['p_value'] for v in alone):.0e} | "
                  f"{any(v['stolen'] for v in pooled.values())}, {p} | {own} | {read} / {result['queries']} |",
                  flush=True)  # fmt: skip
            for c in args.crowd if n == max(args.accounts) else []:
                if victim not in clients:
                    defenses = json.loads((job.parent / "result.json").read_text())["defenses"]
                    clients[victim] = crowd(args.grid / "jobs" / victim, defenses, splits.test.images, max(args.crowd))
                with_crowd = accounts | dict(list(clients[victim].items())[:c])
                got = verify(suspect, with_crowd, significance=SIGNIFICANCE, together=True)["accounts"]
                pooled = {v["test"]: v for v in got if v["account"] == POOLED}
                ps = ", ".join(f"{v['p_value']:.0e}" for v in pooled.values())
                stolen = any(v["stolen"] for v in pooled.values())
                crowded.append(f"| {job.parent.name.removeprefix('victim-')} | {n} + {c} | {stolen} | {ps} |")
                for twin in twins.get(victim, []):
                    crowd_pools.count(verify(twin, with_crowd, significance=SIGNIFICANCE, together=True)["accounts"])
            if n > 1:
                for twin in twins.get(victim, []):
                    twin_pools.count(verify(twin, accounts, significance=SIGNIFICANCE, together=True)["accounts"])
    if crowded:
        print("\n| clone | thief's keys + benign keys, together | proven | pooled p (watermark, order) |")
        print("| --- | --- | --- | --- |")
        print("\n".join(crowded))
        print(f"\nInnocents against the thief's and the benign keys together: {crowd_pools}")
    print(f"\nInnocents (the grid's undefended twins against their victim's N accounts, together): {twin_pools}")


if __name__ == "__main__":
    main()
