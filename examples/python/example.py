#!/usr/bin/env python3
"""tact from Python: the sniper attack, Decide, Authorize and a DecideBatch screening.

Usage: example.py [HOST:PORT]   (or TACT_ADDR; default 127.0.0.1:50051)
"""

import os
import sys
import uuid
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import grpc
from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
GEN = HERE / "gen"


def load_stubs():
    """Generates the stubs from the shipped protos into gen/ (gitignored) and imports them."""
    protos = ROOT / "proto"
    files = sorted(str(p.relative_to(protos)) for p in (protos / "tact" / "v1").glob("*.proto"))
    well_known = resources.files("grpc_tools") / "_proto"
    GEN.mkdir(exist_ok=True)
    args = ["protoc", f"-I{protos}", f"-I{well_known}", f"--python_out={GEN}", f"--grpc_python_out={GEN}"]
    if protoc.main(args + files) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, str(GEN))


load_stubs()
from tact.v1 import contact_policy_pb2 as cp  # noqa: E402
from tact.v1 import contact_policy_pb2_grpc as cp_grpc  # noqa: E402
from tact.v1 import events_pb2 as ev  # noqa: E402

CALL, EMAIL, MEETING = ev.CHANNEL_CALL, ev.CHANNEL_EMAIL, ev.CHANNEL_SALES_MEETING
SALES, MARKETING = ev.PURPOSE_SALES, ev.PURPOSE_MARKETING
SHORT = 2.0  # seconds: the deadline of one decision (a read: memory only)
# seconds: the deadline of a durable write (Authorize, one RecordEvents): it waits for the
# disk to confirm (fsync), which a busy disk can hold for seconds (TACT_WRITE_DEADLINE_S
# sets another, as the project's CI does on machines whose disks stall after a build)
WRITE = float(os.environ.get("TACT_WRITE_DEADLINE_S", "10"))
LONG = 30.0  # seconds: the deadline of a batch


def name(enum, value):
    return enum.Name(value).split("_", 1)[1].lower()


def when(ts):
    return ts.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")


def show(label, d):
    verdict = cp.Verdict.Name(d.verdict).removeprefix("VERDICT_")
    until = f" until {when(d.not_before)}" if d.HasField("not_before") else ""
    print(f"{label}: {verdict}{until}")
    for r in d.reasons:
        print(f"    [{r.rule_id}] {cp.Effect.Name(r.effect).removeprefix('EFFECT_')}: {r.message}")
    for a in d.alternatives:
        start = f"from {when(a.not_before)}" if a.HasField("not_before") else "now"
        print(f"    instead: {name(ev.Channel, a.channel)} for {name(ev.Purpose, a.purpose)}, {start}: {a.note}")


def explain(err):
    """How a caller should treat each status tact returns (README, "Status codes")."""
    meta = dict(err.trailing_metadata() or ())
    reason = meta.get("tact-reason", "")
    advice = {
        grpc.StatusCode.INVALID_ARGUMENT: "fix the named field; do not retry as is",
        grpc.StatusCode.FAILED_PRECONDITION: "another instance owns this customer: ask it",
        grpc.StatusCode.UNAVAILABLE: "retry here after a short backoff",
        grpc.StatusCode.RESOURCE_EXHAUSTED: (
            f"wait {meta['retry-after']} ms, then retry" if "retry-after" in meta else "split the request"
        ),
        grpc.StatusCode.ABORTED: "not recorded: do not act, ask again",
        grpc.StatusCode.DEADLINE_EXCEEDED: "no answer in time",
    }.get(err.code(), "unexpected")
    return f"{err.code().name} {reason} {err.details()!r}: {advice}"


def authorize(stub, req):
    """Authorize, which is never retried blindly: its ALLOW is recorded and counts.

    On a timeout or a lost connection the authorization may or may not have been
    recorded; on ABORTED it was not. Either way: do not act on it. Ask Decide
    (read-only, safe to retry) whether the outreach is still welcome, and Authorize
    again only if it is."""
    try:
        return stub.Authorize(req, timeout=WRITE)
    except grpc.RpcError as err:
        if err.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED):
            raise
        print(f"Authorize failed ({explain(err)}); not acting")
        show("Decide says", stub.Decide(cp.DecideRequest(customer_id=req.customer_id, channel=req.channel,
                                                         purpose=req.purpose), timeout=SHORT))
        return None


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TACT_ADDR", "127.0.0.1:50051")
    config = (ROOT / "config" / "grpc-service-config.json").read_text()
    options = [("grpc.service_config", config), ("grpc.enable_retries", 1)]
    run = uuid.uuid4().hex[:6]  # fresh customers each run, so the answers are the same every time
    ann, ben, cara, dan = (f"{n}-{run}" for n in ("ann", "ben", "cara", "dan"))
    now = datetime.now(timezone.utc)
    year_ago = now - timedelta(days=365)

    def event(customer, what, at, **kind):
        e = ev.InteractionEvent(event_id=f"{customer}-{what}", customer_id=customer, source="example-python", **kind)
        e.occurred_at.FromDatetime(at)
        return e

    def consent(customer, channel, purpose):
        grant = ev.ConsentChanged(channel=channel, purpose=purpose, granted=True, proof="signup-form")
        what = f"consent-{name(ev.Channel, channel)}-{name(ev.Purpose, purpose)}"
        return event(customer, what, year_ago, consent_changed=grant)

    with grpc.insecure_channel(addr, options=options) as channel:
        stub = cp_grpc.ContactPolicyStub(channel)
        try:
            print("== RecordEvents: Ann agreed to sales calls and emails; 5 minutes ago she compared prices")
            events = [
                consent(ann, CALL, SALES),
                consent(ann, EMAIL, SALES),
                event(ann, "compare", now - timedelta(minutes=5),
                      page_viewed=ev.PageViewed(url="/car-insurance/compare", category="compare")),
                consent(ben, MEETING, SALES),
                event(ben, "download", now - timedelta(hours=14),
                      content_downloaded=ev.ContentDownloaded(asset="white-paper-fleet-insurance")),
                consent(cara, EMAIL, MARKETING),
            ]
            recorded = stub.RecordEvents(cp.RecordEventsRequest(events=events), timeout=LONG)
            for r in recorded.results:
                print(f"    {r.event_id}: {cp.RecordStatus.Name(r.status).removeprefix('RECORD_STATUS_')} {r.reason}".rstrip())

            print("== Decide: may a sales rep call Ann now?")
            call = cp.DecideRequest(customer_id=ann, channel=CALL, purpose=SALES, requested_by="example-python")
            show(f"Decide {ann} call/sales", stub.Decide(call, timeout=SHORT))

            print("== Authorize: the email tact suggests instead, before sending it")
            email = cp.DecideRequest(customer_id=ann, channel=EMAIL, purpose=SALES,
                                     campaign_id="car-insurance", requested_by="example-python")
            d = authorize(stub, email)
            if d is not None:
                show(f"Authorize {ann} email/sales", d)
                if d.verdict == cp.VERDICT_ALLOW:
                    print(f"    (the email goes out; report it with decision id {d.decision_id})")
                    sent = ev.OutreachSent(channel=EMAIL, purpose=SALES, campaign="car-insurance",
                                           decision_id=d.decision_id)
                    r = stub.RecordEvents(cp.RecordEventsRequest(events=[event(ann, "email-sent", now, outreach_sent=sent)]),
                                          timeout=WRITE).results[0]
                    print(f"    {r.event_id}: {cp.RecordStatus.Name(r.status).removeprefix('RECORD_STATUS_')} {r.reason}".rstrip())

            print("== DecideBatch: screen an audience")
            audience = [(ann, CALL, SALES), (ben, MEETING, SALES), (cara, EMAIL, MARKETING), (dan, EMAIL, MARKETING)]
            batch = cp.DecideBatchRequest(requests=[
                cp.DecideRequest(customer_id=c, channel=ch, purpose=p, campaign_id="spring", requested_by="example-python")
                for c, ch, p in audience
            ])
            answer = stub.DecideBatch(batch, timeout=LONG)
            for (c, ch, p), d in zip(audience, answer.decisions):
                show(f"Batch {c} {name(ev.Channel, ch)}/{name(ev.Purpose, p)}", d)

            print("== DecideBatch with an audience: one campaign email, many customers, packed answers")
            ids = [ann, ben, cara, dan, "not valid"]
            screening = stub.DecideBatch(cp.DecideBatchRequest(audience=cp.Audience(
                channel=EMAIL, purpose=MARKETING, campaign_id="spring", requested_by="example-python",
                customer_ids=ids)), timeout=LONG).screening
            errors = {e.index: e for e in screening.errors}
            for i, c in enumerate(ids):
                if i in errors:
                    print(f"Audience {c!r}: not decided: {errors[i].field}: {errors[i].message}")
                    continue
                verdict = cp.Verdict.Name(screening.verdicts[i]).removeprefix("VERDICT_")
                ms = screening.not_before_unix_ms[i]
                until = f" until {datetime.fromtimestamp(ms / 1000, timezone.utc):%Y-%m-%dT%H:%M:%SZ}" if ms else ""
                print(f"Audience {c}: {verdict}{until} (decision {screening.decision_id_prefix}{i:08x})")
            assert len(screening.verdicts) == len(ids) and list(errors) == [4], screening
        except grpc.RpcError as err:
            sys.exit(f"tact at {addr}: {explain(err)}")


if __name__ == "__main__":
    main()
