//! Micro benchmarks: the record envelope, ids, the storage key, cookie signing.
//! Run with `cargo bench -p session-bench --bench micro` (or `cargo xtask bench`).

use std::collections::BTreeMap;
use std::hint::black_box;

use cookie::{Cookie, CookieJar, Key};
use criterion::{Criterion, criterion_group, criterion_main};
use session_core::{
    IdGenerator, Record, SessionId, Timestamp, UuidV4Generator, decode_envelope, encode_envelope,
};

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
    let blob = encode_envelope(&r);
    c.bench_function("envelope/encode 5 keys", |b| {
        b.iter(|| encode_envelope(black_box(&r)))
    });
    c.bench_function("envelope/decode 5 keys", |b| {
        b.iter(|| decode_envelope(r.key, black_box(&blob)))
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
    let key = Key::generate();
    let id = UuidV4Generator.generate();
    let mut jar = CookieJar::new();
    jar.signed_mut(&key)
        .add(Cookie::new("id", id.as_str().to_owned()));
    let signed = jar.get("id").cloned().expect("just added");
    c.bench_function("cookie/sign", |b| {
        b.iter(|| {
            let mut jar = CookieJar::new();
            jar.signed_mut(&key)
                .add(Cookie::new("id", black_box(id.as_str()).to_owned()));
            jar
        })
    });
    c.bench_function("cookie/verify", |b| {
        b.iter(|| {
            CookieJar::new()
                .signed(&key)
                .verify(black_box(signed.clone()))
        })
    });
}

criterion_group!(micro, envelope, ids, cookies);
criterion_main!(micro);
