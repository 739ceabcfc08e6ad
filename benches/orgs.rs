//! Client address -> organisation: the cost per query of the org map, with
//! 50 and with 5,000 organisations (10 networks each: 500 and 50,000
//! prefixes of mixed lengths, IPv4 and IPv6). The two groups should cost
//! the same per lookup: it depends on the number of distinct prefix
//! lengths, not on the number of organisations.
//!
//! `cargo bench --bench orgs`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::config::Organisation;
use portcullis::orgs::OrgMap;

/// Deterministic organisations: org i holds 8 IPv4 networks (/16 to /30,
/// carved from 10.0.0.0/8 and 100.64.0.0/10) and 2 IPv6 /48s.
fn organisations(n: usize, rng: &mut fastrand::Rng) -> Vec<Organisation> {
    (0..n)
        .map(|i| {
            let mut networks = Vec::new();
            for j in 0..8u32 {
                let len = [16u8, 20, 22, 24, 24, 26, 28, 30][j as usize];
                let base = if j % 2 == 0 { 0x0A00_0000u32 } else { 0x6440_0000 };
                let span = if j % 2 == 0 { 24 } else { 22 };
                let addr = base | (rng.u32(..) & ((1u32 << span) - 1));
                networks.push(
                    ipnet::Ipv4Net::new(Ipv4Addr::from(addr), len)
                        .unwrap()
                        .trunc()
                        .into(),
                );
            }
            for _ in 0..2 {
                let addr = (0x2001_0db8u128 << 96) | (u128::from(rng.u32(..)) << 80);
                networks.push(
                    ipnet::Ipv6Net::new(Ipv6Addr::from(addr), 48)
                        .unwrap()
                        .trunc()
                        .into(),
                );
            }
            Organisation {
                id: format!("org-{i}"),
                name: format!("Organisation {i}"),
                networks,
                token_sha256: None,
                allow: Vec::new(),
                actions: BTreeMap::new(),
            }
        })
        .collect()
}

/// Build a map, skipping networks that another org already claimed (the
/// random carving can collide; the config would reject that).
fn build(orgs: Vec<Organisation>) -> (OrgMap, usize) {
    let mut kept: Vec<Organisation> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for mut org in orgs {
        org.networks.retain(|n| seen.insert(*n));
        kept.push(org);
    }
    let prefixes = kept.iter().map(|o| o.networks.len()).sum();
    (OrgMap::new(&kept).expect("no duplicates left"), prefixes)
}

fn clients(rng: &mut fastrand::Rng, n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| match i % 4 {
            0 => IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | (rng.u32(..) & 0x00FF_FFFF))),
            1 => IpAddr::V4(Ipv4Addr::from(0x6440_0000 | (rng.u32(..) & 0x003F_FFFF))),
            2 => IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8u128 << 96) | (u128::from(rng.u32(..)) << 80) | 1,
            )),
            // Unknown clients: the refusal path.
            _ => IpAddr::V4(Ipv4Addr::from(0xC633_6400 | (rng.u32(..) & 0xFF))),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(42);
    let queries = clients(&mut rng, 4096);
    let mut group = c.benchmark_group("org_lookup");
    group.throughput(Throughput::Elements(queries.len() as u64));
    for n in [50usize, 5_000] {
        let (map, prefixes) = build(organisations(n, &mut rng));
        let found = queries.iter().filter(|ip| map.lookup(**ip).is_some()).count();
        eprintln!("{n} organisations, {prefixes} prefixes, {found}/{} clients matched", queries.len());
        group.bench_function(format!("{n}_orgs_{prefixes}_prefixes"), |b| {
            b.iter(|| {
                let mut hits = 0usize;
                for ip in &queries {
                    hits += usize::from(map.lookup(black_box(*ip)).is_some());
                }
                hits
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
