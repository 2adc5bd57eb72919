"""Server CPU per operation on a MongoDB-protocol server, for each form of read and write that
session-mongo, tower-sessions-mongodb-store and the raw limit send (documents shaped like
theirs, 1 000 of each). Usage, with the venv `cargo xtask test-backends` provisions:

    target/xtask/secantus-venv/bin/python session-bench/scripts/mongo-ops.py <port> <server-pid> [ops]

Prints a Markdown row per form: median server CPU µs per operation (min–max of 3 rounds) and
the client's wall time per operation."""
import datetime, os, sys, time, uuid
from bson import Binary
from pymongo import MongoClient

port, pid = int(sys.argv[1]), int(sys.argv[2])
OPS = int(sys.argv[3]) if len(sys.argv) > 3 else 1500
N = 1000
cl = MongoClient(f"mongodb://127.0.0.1:{port}")
db = cl[f"attr{os.getpid()}"]
now = lambda: datetime.datetime.now(datetime.timezone.utc)
later = now() + datetime.timedelta(hours=1)
def cpu():
    f = open(f"/proc/{pid}/stat").read().split()
    return (int(f[13]) + int(f[14])) / os.sysconf("SC_CLK_TCK")
ours, ts, raw = db["ours"], db["ts"], db["raw"]
ours.create_index("expires_at", expireAfterSeconds=0)
ours.create_index("owner")
oid = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(N)]
tid = [str(uuid.uuid4()) for _ in range(N)]
ours.insert_many([{"_id": oid[i], "v": 1, "created_at": now(), "expires_at": later, "owner": None,
                   "data": {f"k{k}": Binary(os.urandom(40)) for k in range(5)}} for i in range(N)])
ts.insert_many([{"_id": tid[i], "data": Binary(os.urandom(250)), "expireAt": later} for i in range(N)])
raw.insert_many([{"_id": i, "data": {"v": Binary(os.urandom(250))}} for i in range(N)])
def ours_filter(i):
    return {"_id": oid[i], "expires_at": {"$gt": now()}, "forward_to": {"$exists": False}}
forms = {
    "ours find_one until the thirteenth session (live filter)": lambda i: ours.find_one(ours_filter(i)),
    "ours find_one since (by _id; expiry checked by the client)": lambda i: ours.find_one({"_id": oid[i]}),
    "tower-sessions find_one (_id, expireAt > now)": lambda i: ts.find_one({"_id": tid[i], "expireAt": {"$gt": now()}}),
    "raw find_one by _id": lambda i: raw.find_one({"_id": i}),
    "ours update_one ($set data.k3 + expires_at, $unset counters.k3; live filter)": lambda i: ours.update_one(
        ours_filter(i), {"$set": {"expires_at": later, "data.k3": Binary(os.urandom(40))}, "$unset": {"counters.k3": ""}}),
    "ours update_one without the $unset": lambda i: ours.update_one(
        ours_filter(i), {"$set": {"expires_at": later, "data.k3": Binary(os.urandom(40))}}),
    "ours update_one, filter by _id only": lambda i: ours.update_one(
        {"_id": oid[i]}, {"$set": {"expires_at": later, "data.k3": Binary(os.urandom(40))}, "$unset": {"counters.k3": ""}}),
    "tower-sessions update_one ($set data blob + expireAt, upsert)": lambda i: ts.update_one(
        {"_id": tid[i]}, {"$set": {"data": Binary(os.urandom(250)), "expireAt": later}}, upsert=True),
    "raw update_one ($set data.v by _id)": lambda i: raw.update_one({"_id": i}, {"$set": {"data.v": Binary(os.urandom(250))}}),
}
ROUNDS = 3
res = {name: [] for name in forms}
for rnd in range(ROUNDS + 1):
    for name, op in forms.items():
        c0 = cpu(); t0 = time.time()
        for j in range(OPS):
            op((j * 7919 + rnd) % N)
        c1 = cpu(); t1 = time.time()
        if rnd > 0:
            res[name].append((1e6 * (c1 - c0) / OPS, 1e6 * (t1 - t0) / OPS))
for name, r in res.items():
    cpus = sorted(c for c, _ in r); walls = sorted(w for _, w in r)
    print(f"| {name} | {cpus[len(cpus)//2]:.0f} ({cpus[0]:.0f}–{cpus[-1]:.0f}) | {walls[len(walls)//2]:.0f} |")
cl.drop_database(db.name)
