"""Security benchmark: authentication (API key, JWT) and authorisation decisions per second and
latency percentiles; authorisation with 10, 1,000 and 10,000 rules, ours against PyCasbin on the
same RBAC policy, in one run, with every decision cross-checked between the two.

Usage: python benchmarks/run.py [--iterations N] [--rules 10,1000,10000] [--casbin-budget-s S]
Writes results/security.json, prints Markdown tables and regenerates them in the module's README
(between the ``bench:security`` markers).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import SecretStr

from genai_factory.security.apikeys import APIKeyAuthenticator, APIKeyManager
from genai_factory.security.authz import PolicyAuthorizer
from genai_factory.security.jwt_auth import JWTAuthenticator, public_jwk
from genai_factory.security.keystore import SQLiteAPIKeyStore
from genai_factory.shared.models import Principal

HERE = Path(__file__).resolve().parent
ISSUER, AUDIENCE = "https://idp.bench", "genai-factory"

CASBIN_MODEL = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act
"""


def summarise(samples_ns: list[int], wall_s: float) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1000.0

    return {
        "n": len(ordered),
        "ops_per_s": round(len(ordered) / wall_s, 1),
        "mean_us": round(statistics.fmean(ordered) / 1000.0, 2),
        "p50_us": round(pct(0.50), 2),
        "p99_us": round(pct(0.99), 2),
        "max_us": round(ordered[-1] / 1000.0, 2),
    }


async def time_async(call: Callable[[int], Awaitable[Any]], iterations: int) -> dict[str, float]:
    for i in range(min(200, iterations)):  # warm-up
        await call(i)
    samples: list[int] = []
    started = time.perf_counter()
    for i in range(iterations):
        t0 = time.perf_counter_ns()
        await call(i)
        samples.append(time.perf_counter_ns() - t0)
    return summarise(samples, time.perf_counter() - started)


def time_sync(
    call: Callable[[int], Any], iterations: int, budget_s: float | None = None
) -> dict[str, float]:
    for i in range(min(50, iterations)):
        call(i)
    samples: list[int] = []
    started = time.perf_counter()
    for i in range(iterations):
        t0 = time.perf_counter_ns()
        call(i)
        samples.append(time.perf_counter_ns() - t0)
        if budget_s is not None and time.perf_counter() - started > budget_s and len(samples) >= 30:
            break
    return summarise(samples, time.perf_counter() - started)


# ----------------------------------------------------------------------------- authentication


async def bench_authentication(iterations: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteAPIKeyStore(str(Path(tmp) / "keys.db"))
        manager = APIKeyManager(store, secret=SecretStr("bench-" + "s" * 40))
        for n in range(999):  # a realistic table: the key is one of a thousand
            await manager.create(f"k{n}", subject=f"svc{n}")
        issued = await manager.create("bench", subject="svc", roles=["invoker"])
        authenticator = APIKeyAuthenticator(manager)
        headers = {"authorization": f"Bearer {issued.key}"}

        async def api_key(_: int) -> None:
            await authenticator.authenticate(headers)

        results["api_key (SQLite, 1,000 keys)"] = await time_async(api_key, iterations)
        await store.close()

    now = int(time.time())
    claims = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 3600}
    claims |= {"roles": ["invoker"], "scope": "model:invoke"}
    for alg, key in (
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
    ):
        verifier = JWTAuthenticator(
            issuer=ISSUER,
            audience=AUDIENCE,
            jwks={"keys": [public_jwk(key.public_key(), kid="k1")]},  # type: ignore[arg-type]
            algorithms=(alg,),
        )
        token = jwt.encode(claims, key, algorithm=alg, headers={"kid": "k1"})
        token_headers = {"authorization": f"Bearer {token}"}

        async def jwt_call(
            _: int, v: JWTAuthenticator = verifier, h: dict[str, str] = token_headers
        ) -> None:
            await v.authenticate(h)

        results[f"jwt {alg} (cached JWKS)"] = await time_async(jwt_call, iterations)
    return results


# ----------------------------------------------------------------------------- authorisation


def synthetic_policy(rules: int, seed: int = 7) -> dict[str, Any]:
    """``rules`` allow rules over ~rules/10 roles, 50 resource types, 8 actions; every fifth
    role inherits the one before it. Pure RBAC, so PyCasbin can express exactly the same."""
    rng = random.Random(seed)
    n_roles = max(2, rules // 10)
    roles = [f"role{i}" for i in range(n_roles)]
    types = [f"type{i}" for i in range(50)]
    actions = ["read", "list", "invoke", "query", "create", "update", "delete", "publish"]
    triples: set[tuple[str, str, str]] = set()
    while len(triples) < rules:
        triples.add((rng.choice(roles), rng.choice(actions), rng.choice(types)))
    return {
        "roles": {roles[i]: {"inherits": [roles[i - 1]]} for i in range(1, n_roles) if i % 5 == 0},
        "rules": [
            {"id": f"r{n}", "roles": [role], "actions": [action], "resources": [rtype]}
            for n, (role, action, rtype) in enumerate(sorted(triples))
        ],
        "_meta": {"roles": roles, "types": types, "actions": actions},
    }


def requests_for(
    policy: dict[str, Any], count: int, seed: int = 11
) -> list[tuple[list[str], str, str]]:
    rng = random.Random(seed)
    meta = policy["_meta"]
    rules = policy["rules"]
    out = []
    for i in range(count):
        if i % 2 == 0:  # half aimed at an existing grant, so about half are allowed
            rule = rng.choice(rules)
            out.append(([rule["roles"][0]], rule["actions"][0], rule["resources"][0]))
        else:
            out.append(
                (
                    rng.sample(meta["roles"], k=min(2, len(meta["roles"]))),
                    rng.choice(meta["actions"]),
                    rng.choice(meta["types"]),
                )
            )
    return out


def casbin_enforcer(policy: dict[str, Any], users: list[list[str]]) -> Any:
    import casbin

    model = casbin.model.Model()
    model.load_model_from_text(CASBIN_MODEL)
    enforcer = casbin.Enforcer(model)
    enforcer.add_policies(
        [[r["roles"][0], r["resources"][0], r["actions"][0]] for r in policy["rules"]]
    )
    grouping = [[child, parent] for child, d in policy["roles"].items() for parent in d["inherits"]]
    grouping += [[f"user{i}", role] for i, roles in enumerate(users) for role in roles]
    enforcer.add_grouping_policies(grouping)
    return enforcer


def bench_rule_count(rules: int, iterations: int, casbin_budget_s: float) -> dict[str, Any]:
    policy = synthetic_policy(rules)
    meta = policy.pop("_meta")
    t0 = time.perf_counter()
    ours = PolicyAuthorizer(policy)
    compile_ms = (time.perf_counter() - t0) * 1000
    reqs = requests_for({**policy, "_meta": meta}, 2000)
    # (principal, action, resource) for us; (user, object, action) for PyCasbin: same requests
    our_reqs = [
        (Principal(subject=f"user{i}", roles=frozenset(roles)), action, f"{rtype}:x")
        for i, (roles, action, rtype) in enumerate(reqs)
    ]
    casbin_reqs = [(f"user{i}", rtype, action) for i, (_, action, rtype) in enumerate(reqs)]
    t0 = time.perf_counter()
    enforcer = casbin_enforcer(policy, [roles for roles, _, _ in reqs])
    casbin_load_ms = (time.perf_counter() - t0) * 1000
    count = len(reqs)

    def ours_call(i: int) -> bool:
        principal, action, resource = our_reqs[i % count]
        return ours.decide(principal, action, resource).allowed

    def casbin_call(i: int) -> bool:
        return bool(enforcer.enforce(*casbin_reqs[i % count]))

    async def ours_async(i: int) -> None:
        await ours.authorize(*our_reqs[i % count])

    # decisions compared one by one: both engines must agree on the same policy
    checked = min(count, 2000 if rules <= 1000 else 200)
    disagreements = sum(ours_call(i) != casbin_call(i) for i in range(checked))
    allowed = sum(ours_call(i) for i in range(count))
    return {
        "rules": rules,
        "roles": len(meta["roles"]),
        "compile_ms": round(compile_ms, 2),
        "casbin_load_ms": round(casbin_load_ms, 2),
        "allowed_fraction": round(allowed / count, 3),
        "decisions_compared": checked,
        "disagreements": disagreements,
        "ours_decide": time_sync(ours_call, iterations),
        "ours_authorize_async": asyncio.run(time_async(ours_async, iterations)),
        "pycasbin_enforce": time_sync(casbin_call, iterations, budget_s=casbin_budget_s),
    }


def bench_authorisation(
    rule_counts: list[int], iterations: int, casbin_budget_s: float
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for rules in rule_counts:
        results[str(rules)] = bench_rule_count(rules, iterations, casbin_budget_s)
        print(f"  {rules} rules done", flush=True)
    return results


def versions() -> dict[str, str]:
    names = ["genai-factory-security", "pyjwt", "cryptography", "pycasbin", "pydantic"]
    return {name: importlib.metadata.version(name) for name in names}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(load_at_start: float) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "load_avg_1m_start": round(load_at_start, 2),
    }


def tables(auth: dict[str, Any], authz: dict[str, Any]) -> str:
    lines = [
        "| authentication | ops/s | p50 µs | p99 µs |",
        "|---|---:|---:|---:|",
    ]
    for name, r in auth.items():
        lines.append(f"| {name} | {r['ops_per_s']:,.0f} | {r['p50_us']:.1f} | {r['p99_us']:.1f} |")
    lines += [
        "",
        "| rules | ours decide ops/s | ours p50 µs | ours p99 µs | ours async p99 µs | PyCasbin ops/s | PyCasbin p50 µs | PyCasbin p99 µs | decisions compared / disagreements |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in authz.values():
        o, a, c = r["ours_decide"], r["ours_authorize_async"], r["pycasbin_enforce"]
        lines.append(
            f"| {r['rules']:,} | {o['ops_per_s']:,.0f} | {o['p50_us']:.1f} | {o['p99_us']:.1f} | "
            f"{a['p99_us']:.1f} | {c['ops_per_s']:,.0f} | {c['p50_us']:.1f} | {c['p99_us']:.1f} | "
            f"{r['decisions_compared']} / {r['disagreements']} |"
        )
    return "\n".join(lines)


def summary(result: dict[str, Any]) -> str:
    """The machine line and the goal's verdict, from the measured numbers only."""
    m, v = result["machine"], result["versions"]
    lines = [
        f"Measured on {m['platform']}, {m['cpu_count']} CPUs ({m['cpu']}), Python {m['python']}, "
        f"PyCasbin {v['pycasbin']}, load average {m['load_avg_1m_start']:.1f} at the start and "
        f"{m['load_avg_1m']:.1f} at the end (1 min); {result['parameters']['iterations']:,} "
        f"iterations per row, PyCasbin time-boxed at {result['parameters']['casbin_budget_s']:g} s "
        "per row.",
    ]
    at_1000 = result["authorisation"].get("1000")
    if at_1000 is not None:
        sync_p99 = at_1000["ours_decide"]["p99_us"]
        async_p99 = at_1000["ours_authorize_async"]["p99_us"]
        verdict = "holds" if max(sync_p99, async_p99) < 100 else "does not hold"
        lines.append(
            f"Goal, under 0.1 ms p99 per decision at 1,000 rules: {verdict} in this run "
            f"({sync_p99:.1f} µs sync, {async_p99:.1f} µs async)."
        )
    return "\n\n".join(lines)


START, END = "<!-- bench:security:start -->", "<!-- bench:security:end -->"


def update_readme(result: dict[str, Any], readme: Path) -> bool:
    """Replace what is between the markers with this run's tables; False when there are none."""
    text = readme.read_text(encoding="utf-8")
    head, found, rest = text.partition(START)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        return False
    body = tables(result["authentication"], result["authorisation"]) + "\n\n" + summary(result)
    readme.write_text(f"{head}{START}\n{body}\n{END}{tail}", encoding="utf-8")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--rules", default="10,1000,10000")
    parser.add_argument("--casbin-budget-s", type=float, default=10.0)
    args = parser.parse_args()
    rule_counts = [int(x) for x in args.rules.split(",")]
    load_at_start = os.getloadavg()[0]  # other work on the machine moves the tail latencies
    print("authentication...", flush=True)
    auth = asyncio.run(bench_authentication(args.iterations))
    print("authorisation...", flush=True)
    authz = bench_authorisation(rule_counts, args.iterations, args.casbin_budget_s)
    result = {
        "name": "security",
        "machine": machine(load_at_start),
        "versions": versions(),
        "parameters": {
            "iterations": args.iterations,
            "rules": rule_counts,
            "casbin_budget_s": args.casbin_budget_s,
            "policy": "synthetic RBAC: rules/10 roles, 50 resource types, 8 actions, every 5th role inherits the previous",
        },
        "authentication": auth,
        "authorisation": authz,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = HERE / "results" / "security.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(HERE.parent)}\n")
    print(tables(auth, authz))
    print("\n" + summary(result))
    if update_readme(result, HERE.parent / "README.md"):
        print("\nupdated the tables in README.md")
    else:
        print(f"\nREADME.md has no {START} marker: tables not written", file=sys.stderr)
        return 1
    failures = [r["rules"] for r in authz.values() if r["disagreements"]]
    if failures:
        print(f"\nours and PyCasbin disagreed at {failures} rules", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
