"""The docs text of benchmarks/scaling_benchmark.py's results: tables and sentences, every
number read from the stored results."""
from __future__ import annotations


def capped_text(mem: dict) -> str:
    rows = [f"| {int(n):,} | {m['cap_gib']:g} | {'yes' if m['returncode'] == 0 else 'no (exit ' + str(m['returncode']) + ')'}"
            f" | {m['wall_s'] / 60:.1f} | {m['cgroup_peak_mib']:,.0f} | {m['peak_RssAnon_mib']:,.0f} | "
            f"{m['cgroup_limit_hits']:,} | {m['oom_kills']} |" for n, m in mem.items()]
    return ("| cases | cap, GiB | fit completed | minutes | peak charged to the cgroup, MiB | peak anonymous, MiB | "
            "times the cap made the kernel reclaim | processes killed for memory |\n"
            "|:--|--:|:--|--:|--:|--:|--:|--:|\n" + "\n".join(rows))


def encoding_text(enc: dict) -> str:
    one, two = enc["median"]["1"], enc["median"]["2"]
    rows = [f"| {name} | {one['encodings'][name]:.1f} | {two['encodings'][name]:.1f} | "
            f"{one['encodings'][name] / two['encodings'][name]:.2f} |" for name in one["encodings"]]
    rows.append(f"| the whole command (loading the encoders included) | {one['wall_s']:.1f} | {two['wall_s']:.1f} | "
                f"{one['wall_s'] / two['wall_s']:.2f} |")
    return ("| encoding | 1 process, s | 2 processes, s | speed-up |\n|:--|--:|--:|--:|\n" + "\n".join(rows)
            + f"\n\n{enc['n']:,} cases, medians of {enc['repeats']} runs each; an encoding's seconds are its "
            "slowest rank's, from the first block to the last.")


def memory_text(mem: dict) -> str:
    rows = [f"| {int(n):,} | {m['wall_s'] / 60:.1f} | {m['peak_VmRSS_mib']:,.0f} | {m['peak_RssAnon_mib']:,.0f} | "
            f"{'yes' if m['peak_VmRSS_mib'] < 8192 else 'no'} |" for n, m in mem.items()]
    return ("| cases | fit, minutes | peak resident set, MiB | of which anonymous (peak), MiB | resident set under "
            "8 GiB |\n|:--|--:|--:|--:|:--|\n" + "\n".join(rows))


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def costs_text(result: dict) -> str:
    enc = result["encoding"]
    one = enc["median"]["1"]["encodings"]
    per_case = {name: s / enc["n"] for name, s in one.items()}
    total = sum(per_case.values())
    load = enc["median"]["1"]["wall_s"] - sum(one.values())  # the command's time outside the encodings
    lines = [f"| {name} | {1000 * s:.1f} |" for name, s in per_case.items()]
    lines.append(f"| all of them | {1000 * total:.1f} |")
    proj = [f"| {n:,} | " + " | ".join(_hours(n * total / w) for w in (1, 4, 32)) + " |"
            for n in (100_000, 1_000_000, 10_000_000)]
    return (f"Measured on {result['machine']} by `python benchmarks/scaling_benchmark.py encoding --n {enc['n']} "
            f"--block-cases {enc['block_cases']}` (one process, the default settings; medians of its runs).\n\n| encoding | ms per case |\n|:--|--:|\n"
            + "\n".join(lines) + "\n\nProjected time to encode a dataset, each worker a machine like this one "
            "running one process, and the work shared evenly (blocks are independent; the projection leaves out "
            f"loading the encoders, {load:.0f} s per process here, and the disk):\n\n| cases | 1 worker | 4 workers | "
            "32 workers |\n|:--|--:|--:|--:|\n" + "\n".join(proj) + "\n\nTwo processes on this 2-core machine: "
            f"{enc['median']['1']['wall_s'] / enc['median']['2']['wall_s']:.2f}x one process's speed for the whole "
            "command (they share the same two cores, so this says that the sharding costs little, not how more "
            "machines scale).")


def ddp_text(res: dict) -> str:
    rows = [f"| {m} | {r['cases']} | {r['two']['mean_abs_prob']:.3f} | {r['two']['agreement']:.0%} | "
            f"{100 * r['two']['accuracy_change']:+.1f} | {r['seed1']['mean_abs_prob']:.3f} | "
            f"{r['seed1']['agreement']:.0%} | {100 * r['seed1']['accuracy_change']:+.1f} |"
            for m, r in res["models"].items()]
    return ("| model | held-out cases | 2 processes: mean abs. change of a probability | same class | accuracy, "
            "points | seed 1: mean abs. change | same class | accuracy, points |\n|:--|--:|--:|--:|--:|--:|--:|--:|\n"
            + "\n".join(rows))
