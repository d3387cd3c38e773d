//! The adaptive-scheduling benchmark's workload, shared by the
//! planner's virtual-time tests and `benches/adaptive.rs` so both replay
//! the same bans: rooms of one to three pages, bans arriving as a Poisson
//! process at 0.5/s spread Zipf(1.1) over rooms, and every 20 s a raid (a
//! Zipf-chosen room gets 10 bans over 30 s).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Rooms (cost in pages) and bans (time, room), in time order.
pub struct Workload {
    pub costs: Vec<u32>,
    pub bans: Vec<(f64, usize)>,
}

/// Zipf(s) over `n` ranks, each rank mapped to a room by a shuffle (so
/// the busy rooms are not the first ones a sweep walks).
pub fn zipf_sampler(
    n: usize,
    s: f64,
    rng: &mut StdRng,
) -> impl FnMut(&mut StdRng) -> usize + use<> {
    let mut cum = Vec::with_capacity(n);
    let mut total = 0.0;
    for k in 1..=n {
        total += (k as f64).powf(-s);
        cum.push(total);
    }
    let mut rooms: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        rooms.swap(i, rng.gen_range(0..=i));
    }
    move |rng: &mut StdRng| {
        let x = rng.r#gen::<f64>() * total;
        rooms[cum.partition_point(|c| *c < x).min(n - 1)]
    }
}

/// The benchmark's workload: bans from `from` for `span` seconds.
pub fn workload(seed: u64, rooms: usize, from: f64, span: f64) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let costs = (0..rooms).map(|_| rng.gen_range(1..=3)).collect();
    let mut pick = zipf_sampler(rooms, 1.1, &mut rng);
    let mut bans = Vec::new();
    let mut t = from;
    loop {
        t += -rng.r#gen::<f64>().max(1e-12).ln() / 0.5;
        if t >= from + span {
            break;
        }
        bans.push((t, pick(&mut rng)));
    }
    let mut raid = from;
    while raid < from + span {
        let room = pick(&mut rng);
        for _ in 0..10 {
            bans.push((raid + rng.r#gen::<f64>() * 30.0, room));
        }
        raid += 20.0;
    }
    bans.sort_by(|a, b| a.0.total_cmp(&b.0));
    Workload { costs, bans }
}
