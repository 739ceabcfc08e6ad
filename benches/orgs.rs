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

/// Deterministic organisations, all networks distinct by construction:
/// org i holds eight IPv4 networks of lengths /24 to /32, each at the start
/// of its own /24 in 10.0.0.0/8, and two IPv6 /48s.
fn organisations(n: usize) -> Vec<Organisation> {
    (0..n)
        .map(|i| {
            let mut networks = Vec::new();
            for j in 0..8u32 {
                let len = [24u8, 25, 26, 27, 28, 29, 30, 32][j as usize];
                let block = i as u32 * 8 + j;
                let addr = 0x0A00_0000u32 + block * 256;
                networks.push(
                    ipnet::Ipv4Net::new(Ipv4Addr::from(addr), len)
                        .unwrap()
                        .into(),
                );
            }
            for j in 0..2u128 {
                let addr = (0x2001_0db8u128 << 96) | ((i as u128 * 2 + j) << 80);
                networks.push(
                    ipnet::Ipv6Net::new(Ipv6Addr::from(addr), 48)
                        .unwrap()
                        .into(),
                );
            }
            Organisation {
                id: format!("org-{i}"),
                name: format!("Organisation {i}"),
                networks,
                token_sha256: None,
                roaming_key_sha256: None,
                allow: Vec::new(),
                actions: BTreeMap::new(),
                contact: None,
                client_qps: None,
            }
        })
        .collect()
}

/// Clients spread over the organisations' blocks (some inside a network,
/// some in the rest of its /24: no match) and a quarter from nowhere.
fn clients(rng: &mut fastrand::Rng, orgs: usize, n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            let block = rng.u32(0..orgs as u32 * 8);
            match i % 4 {
                0 | 1 => IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + block * 256 + rng.u32(0..256))),
                2 => IpAddr::V6(Ipv6Addr::from(
                    (0x2001_0db8u128 << 96) | (u128::from(rng.u32(0..orgs as u32 * 2)) << 80) | 1,
                )),
                _ => IpAddr::V4(Ipv4Addr::from(0xC633_6400 | rng.u32(0..256))),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut group = c.benchmark_group("org_lookup");
    for n in [50usize, 5_000] {
        let orgs = organisations(n);
        let prefixes: usize = orgs.iter().map(|o| o.networks.len()).sum();
        let map = OrgMap::new(&orgs).expect("distinct networks");
        let queries = clients(&mut rng, n, 4096);
        group.throughput(Throughput::Elements(queries.len() as u64));
        let found = queries
            .iter()
            .filter(|ip| map.lookup(**ip).is_some())
            .count();
        eprintln!(
            "{n} organisations, {prefixes} prefixes, {found}/{} clients matched",
            queries.len()
        );
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
