//! Micro benchmarks: the record envelope and body patch, ids, the storage key, cookie
//! signing.
//! Run with `cargo bench -p session-bench --bench micro` (or `cargo xtask bench`).

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use session_core::{
    Changes, IdGenerator, Record, SessionId, Timestamp, UuidV4Generator, body, envelope,
};
use session_tower::{CookieSigner, Key};

fn record() -> Record {
    Record {
        key: UuidV4Generator.generate().storage_key(),
        data: (0..5)
            .map(|k| (format!("k{k}"), vec![b'v'; 40]))
            .collect::<BTreeMap<_, _>>(),
        created_at: Timestamp::now(),
        expires_at: Timestamp::now(),
        owner: None,
    }
}

fn envelope(c: &mut Criterion) {
    let r = record();
    let blob = envelope::encode(&r);
    c.bench_function("envelope/encode 5 keys", |b| {
        b.iter(|| envelope::encode(black_box(&r)))
    });
    c.bench_function("envelope/decode 5 keys", |b| {
        b.iter(|| envelope::decode(r.key, black_box(&blob)))
    });
    let mut bytes = Vec::new();
    body::encode_into(&r, &mut bytes);
    let mut changes = Changes::new();
    changes.set("k2", vec![b'w'; 40]);
    let mut out = Vec::with_capacity(bytes.len());
    c.bench_function("body/patch 1 of 5 keys", |b| {
        b.iter(|| {
            out.clear();
            body::patch(black_box(&bytes), &changes, r.expires_at, &mut out)
        })
    });
}

fn ids(c: &mut Criterion) {
    let id = UuidV4Generator.generate();
    let text = id.as_str().to_owned();
    c.bench_function("id/generate", |b| b.iter(|| UuidV4Generator.generate()));
    c.bench_function("id/parse", |b| {
        b.iter(|| SessionId::parse(black_box(&text)))
    });
    c.bench_function("id/storage key (sha-256)", |b| {
        b.iter(|| black_box(&id).storage_key())
    });
}

fn cookies(c: &mut Criterion) {
    let signer = CookieSigner::new(&Key::generate());
    let id = UuidV4Generator.generate();
    let expires = Timestamp::now();
    let value = signer.sign("id", &id, expires);
    c.bench_function("cookie/sign", |b| {
        b.iter(|| signer.sign("id", black_box(&id), expires))
    });
    c.bench_function("cookie/verify", |b| {
        b.iter(|| signer.verify("id", black_box(&value)))
    });
}

criterion_group!(micro, envelope, ids, cookies);
criterion_main!(micro);
