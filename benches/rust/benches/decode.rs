//! Criterion benchmarks of the Rust core on the benchmark stream: all real
//! recordings concatenated in byte-wise file-name order, repeated 240 times.
//! Run: `cargo bench -p sml_bench` (needs ../shared/recordings beside the repo).

#[path = "../../../sml_core/tests/support/mod.rs"]
mod support;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sml_core::{crc, decode_with, transport::Framer, CrcMode, Outcome};

fn benches(c: &mut Criterion) {
    let data = support::benchmark_stream(240);
    let mut g = c.benchmark_group("stream");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(20);
    g.bench_function("crc16_x25", |b| b.iter(|| crc::x25(&data)));
    g.bench_function("framer", |b| {
        b.iter(|| {
            let mut n = 0u32;
            let mut f = Framer::new(CrcMode::Auto);
            f.feed(&data, |fr| n += u32::from(fr.result.is_ok()));
            n
        });
    });
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut values = 0usize;
            decode_with(&data, CrcMode::Auto, |f| {
                if let Outcome::Ok(ms) = &f.outcome {
                    for m in ms {
                        if let sml_core::MessageResult::Ok(m) = m {
                            if let sml_core::Body::GetListResponse(r) = &m.body {
                                values += r.values.len();
                            }
                        }
                    }
                }
            });
            values
        });
    });
    g.bench_function("decode_4k_chunks", |b| {
        b.iter(|| {
            let mut n = 0u32;
            let mut d = sml_core::Decoder::new(CrcMode::Auto);
            for chunk in data.chunks(4096) {
                d.feed(chunk, |f| n += u32::from(matches!(f.outcome, Outcome::Ok(_))));
            }
            n
        });
    });
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
