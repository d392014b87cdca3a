//! Audit throughput: 1,000,000 predictions on three group fields (7 × 2 × 9 levels) with
//! all intersections and 2,000 bootstrap resamples. The target is under 10 s on 2 cores:
//! `RAYON_NUM_THREADS=2 cargo bench -p faceval-benches --bench audit`.

use criterion::{criterion_group, criterion_main, Criterion};
use faceval_eval::fairness::{audit_accuracy, FairnessOptions};
use faceval_eval::stats::BootstrapConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 1_000_000;

struct Data {
    correct: Vec<bool>,
    race: Vec<String>,
    gender: Vec<String>,
    age: Vec<String>,
}

fn data() -> Data {
    let races = [
        "Black",
        "East Asian",
        "Indian",
        "Latino_Hispanic",
        "Middle Eastern",
        "Southeast Asian",
        "White",
    ];
    let ages = [
        "0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut d = Data {
        correct: Vec::with_capacity(N),
        race: Vec::with_capacity(N),
        gender: Vec::with_capacity(N),
        age: Vec::with_capacity(N),
    };
    for _ in 0..N {
        let r = rng.gen_range(0..races.len());
        let a = rng.gen_range(0..ages.len());
        d.race.push(races[r].to_string());
        d.gender
            .push(if rng.gen_bool(0.5) { "Female" } else { "Male" }.to_string());
        d.age.push(ages[a].to_string());
        d.correct.push(rng.gen_bool(0.6 + 0.03 * r as f64));
    }
    d
}

fn bench(c: &mut Criterion) {
    let d = data();
    let options = FairnessOptions {
        min_group_size: 30,
        bootstrap: BootstrapConfig {
            resamples: 2000,
            confidence: 0.95,
            seed: 7,
        },
    };
    let mut group = c.benchmark_group("audit");
    group.sample_size(10);
    group.bench_function("1M_items_3_fields_2000_resamples", |b| {
        b.iter(|| {
            let fields = [
                ("race", d.race.as_slice()),
                ("gender", d.gender.as_slice()),
                ("age", d.age.as_slice()),
            ];
            audit_accuracy(&d.correct, &fields, &options).expect("audit")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
