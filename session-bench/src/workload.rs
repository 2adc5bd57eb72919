//! What every workload of the cycle bench is made of, ours and the anchors' alike.

use std::sync::Arc;

use anyhow::Result;

/// One cycle in flight.
pub(crate) type CycleFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// One loop body of a workload: given a random number, do one cycle.
pub(crate) type Cycle = Arc<dyn Fn(u64) -> CycleFuture + Send + Sync>;

/// The shape of a session: `SESSION_BENCH_SHAPE=<keys>x<value bytes>` (default `5x40`, the
/// figures in BENCHMARKS.md unless a table says otherwise).
fn shape() -> (u64, usize) {
    static SHAPE: std::sync::OnceLock<(u64, usize)> = std::sync::OnceLock::new();
    *SHAPE.get_or_init(|| {
        std::env::var("SESSION_BENCH_SHAPE")
            .ok()
            .and_then(|s| {
                let (k, b) = s.split_once('x')?;
                Some((k.parse().ok()?, b.parse().ok()?))
            })
            .unwrap_or((5, 40))
    })
}

/// How many keys a session has.
pub(crate) fn keys() -> u64 {
    shape().0
}

/// The value a cycle writes for `n` (40 bytes by default): `n` in decimal, zero-padded.
/// Built in one allocation of its final size: `format!` with a width pads a character at a
/// time and grows the string three times, a cost every workload paid beside the store's.
pub(crate) fn value(n: u64) -> String {
    padded(n, shape().1)
}

const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `n` in decimal, zero-padded to `width`, in one allocation of its final size.
pub(crate) fn padded(n: u64, width: usize) -> String {
    let (buf, at) = digits(n);
    let digits = &buf[at..];
    let width = width.max(digits.len());
    let mut s = String::with_capacity(width);
    for _ in 0..(width - digits.len()) / ZEROS.len() {
        s.push_str(ZEROS);
    }
    s.push_str(&ZEROS[..(width - digits.len()) % ZEROS.len()]);
    // ASCII digits.
    s.push_str(std::str::from_utf8(digits).unwrap_or_default());
    s
}

/// The name of key `n` of a session: `k0`, `k1`, … (one allocation of its final size).
pub(crate) fn key(n: u64) -> String {
    let (buf, at) = digits(n);
    let mut s = String::with_capacity(1 + buf.len() - at);
    s.push('k');
    s.push_str(std::str::from_utf8(&buf[at..]).unwrap_or_default());
    s
}

/// `n` in decimal: the digits are `buf[at..]`.
fn digits(mut n: u64) -> ([u8; 20], usize) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return (buf, at);
        }
    }
}

/// About the bytes a session of the shape holds: each key's value and ~10 bytes of name and
/// encoding (250 for the default `5x40`).
pub(crate) fn session_bytes() -> usize {
    let (keys, bytes) = shape();
    usize::try_from(keys)
        .unwrap_or(usize::MAX)
        .saturating_mul(bytes + 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_keys_read_as_format_would_write_them() {
        for n in [0, 7, 10, 12_345, u64::MAX] {
            assert_eq!(padded(n, 150), format!("{n:0150}"));
            assert_eq!(value(n), format!("{n:0width$}", width = shape().1));
            assert_eq!(key(n), format!("k{n}"));
            assert_eq!(padded(n, 20), format!("{n:020}"));
        }
    }
}
