//! One pass over roll-up or raw rows into the totals and rankings of a
//! [`Report`].

// Reports hash a million short strings; FxHash is several times faster
// than SipHash and the keys come from our own database, not an attacker.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::reports::{CategoryCount, ClientRow, Count, DayCount, NameRow, Report};
use crate::clock::{DAY_MS, day_name};

/// One pass over roll-up or raw rows, interning names and clients.
pub(crate) struct Aggregate {
    since: i64,
    until: i64,
    total: u64,
    by_org: HashMap<String, u64>,
    /// category -> feed -> hits.
    by_category: HashMap<String, HashMap<String, u64>>,
    by_action: HashMap<String, u64>,
    names: HashMap<String, NameAgg>,
    /// org -> client -> totals.
    clients: HashMap<String, HashMap<String, ClientAgg>>,
    client_count: u32,
    /// (name index, client index) pairs seen, for distinct counts.
    pairs: HashSet<(u32, u32)>,
    timeline: HashMap<i64, u64>,
}

struct NameAgg {
    index: u32,
    category: String,
    hits: u64,
    first: i64,
    last: i64,
}

struct ClientAgg {
    index: u32,
    hits: u64,
    first: i64,
    last: i64,
}

/// One row the report adds up: `n` hits of the listed name `matched` by
/// one client of one organisation on one day, as a raw record (n = 1) or
/// a daily roll-up gives it; or over several days (`day` is `None`), when
/// the timeline comes separately ([`Aggregate::add_day`]).
pub(crate) struct Pair<'a> {
    pub org: &'a str,
    pub day: Option<i64>,
    pub matched: &'a str,
    pub client: &'a str,
    pub category: &'a str,
    pub n: u64,
    pub first: i64,
    pub last: i64,
}

impl Aggregate {
    pub(crate) fn new(since: i64, until: i64) -> Aggregate {
        Aggregate {
            since,
            until,
            total: 0,
            by_org: HashMap::default(),
            by_category: HashMap::default(),
            by_action: HashMap::default(),
            names: HashMap::default(),
            clients: HashMap::default(),
            client_count: 0,
            pairs: HashSet::default(),
            timeline: HashMap::default(),
        }
    }

    /// Hits of one listed name by one client on one day.
    pub(crate) fn add_pair(&mut self, pair: Pair<'_>) {
        let Pair {
            org,
            day,
            matched,
            client,
            category,
            n,
            first,
            last,
        } = pair;
        self.total += n;
        // Rows repeat their strings; look up by reference and allocate
        // only for a key seen for the first time.
        bump(&mut self.by_org, org, n);
        if let Some(day) = day {
            self.add_day(day, n);
        }
        let name_index = match self.names.get_mut(matched) {
            Some(name) => {
                name.hits += n;
                name.first = name.first.min(first);
                name.last = name.last.max(last);
                name.index
            }
            None => {
                let index = self.names.len() as u32;
                let agg = NameAgg {
                    index,
                    category: category.to_owned(),
                    hits: n,
                    first,
                    last,
                };
                self.names.insert(matched.to_owned(), agg);
                index
            }
        };
        if !self.clients.contains_key(org) {
            self.clients.insert(org.to_owned(), HashMap::default());
        }
        let Some(org_clients) = self.clients.get_mut(org) else {
            return;
        };
        if !org_clients.contains_key(client) {
            let agg = ClientAgg {
                index: self.client_count,
                hits: 0,
                first,
                last,
            };
            self.client_count += 1;
            org_clients.insert(client.to_owned(), agg);
        }
        let Some(client) = org_clients.get_mut(client) else {
            return;
        };
        client.hits += n;
        client.first = client.first.min(first);
        client.last = client.last.max(last);
        self.pairs.insert((name_index, client.index));
    }

    /// `n` hits on `day` for the timeline alone: the totals come with the
    /// pairs.
    pub(crate) fn add_day(&mut self, day: i64, n: u64) {
        *self.timeline.entry(day).or_default() += n;
    }

    /// Hits by category, feed and action.
    pub(crate) fn add_feed(&mut self, category: &str, feed: &str, action: &str, n: u64) {
        bump(&mut self.by_action, action, n);
        match self.by_category.get_mut(category) {
            Some(feeds) => bump(feeds, feed, n),
            None => {
                let mut feeds = HashMap::default();
                feeds.insert(feed.to_owned(), n);
                self.by_category.insert(category.to_owned(), feeds);
            }
        }
    }

    /// Fold in an aggregate of other rows (the other half of the days).
    pub(crate) fn merge(&mut self, other: Aggregate) {
        self.total += other.total;
        for (k, n) in other.by_org {
            *self.by_org.entry(k).or_default() += n;
        }
        for (k, n) in other.by_action {
            *self.by_action.entry(k).or_default() += n;
        }
        for (category, feeds) in other.by_category {
            let mine = self.by_category.entry(category).or_default();
            for (feed, n) in feeds {
                *mine.entry(feed).or_default() += n;
            }
        }
        for (day, n) in other.timeline {
            *self.timeline.entry(day).or_default() += n;
        }
        // Their name and client indices, renumbered into ours.
        let mut name_map: HashMap<u32, u32> = HashMap::default();
        for (name, theirs) in other.names {
            let next = self.names.len() as u32;
            let mine = self.names.entry(name).or_insert_with(|| NameAgg {
                index: next,
                category: theirs.category.clone(),
                hits: 0,
                first: theirs.first,
                last: theirs.last,
            });
            mine.hits += theirs.hits;
            mine.first = mine.first.min(theirs.first);
            mine.last = mine.last.max(theirs.last);
            name_map.insert(theirs.index, mine.index);
        }
        let mut client_map: HashMap<u32, u32> = HashMap::default();
        for (org, clients) in other.clients {
            let mine_org = self.clients.entry(org).or_default();
            for (client, theirs) in clients {
                let next = self.client_count;
                let mine = mine_org.entry(client).or_insert_with(|| ClientAgg {
                    index: next,
                    hits: 0,
                    first: theirs.first,
                    last: theirs.last,
                });
                if mine.index == next {
                    self.client_count += 1;
                }
                mine.hits += theirs.hits;
                mine.first = mine.first.min(theirs.first);
                mine.last = mine.last.max(theirs.last);
                client_map.insert(theirs.index, mine.index);
            }
        }
        for (n, c) in other.pairs {
            if let (Some(n), Some(c)) = (name_map.get(&n), client_map.get(&c)) {
                self.pairs.insert((*n, *c));
            }
        }
    }

    pub(crate) fn finish(self, org: Option<String>, top: usize) -> Report {
        let mut clients_per_name: HashMap<u32, u64> = HashMap::default();
        let mut names_per_client: HashMap<u32, u64> = HashMap::default();
        for (n, c) in &self.pairs {
            *clients_per_name.entry(*n).or_default() += 1;
            *names_per_client.entry(*c).or_default() += 1;
        }
        // Rank by reference; build rows for the top ones only.
        let mut names: Vec<(&String, &NameAgg)> = self.names.iter().collect();
        let by_hits = |a: &(&String, &NameAgg), b: &(&String, &NameAgg)| {
            b.1.hits.cmp(&a.1.hits).then_with(|| a.0.cmp(b.0))
        };
        if names.len() > top {
            names.select_nth_unstable_by(top, by_hits);
            names.truncate(top);
        }
        names.sort_by(by_hits);
        let top_names = names
            .into_iter()
            .map(|(name, a)| NameRow {
                name: name.clone(),
                category: a.category.clone(),
                hits: a.hits,
                clients: clients_per_name.get(&a.index).copied().unwrap_or(0),
                first_seen: a.first,
                last_seen: a.last,
            })
            .collect();
        let mut clients: Vec<(&String, &String, &ClientAgg)> = self
            .clients
            .iter()
            .flat_map(|(org, cs)| cs.iter().map(move |(c, a)| (org, c, a)))
            .collect();
        let by_hits = |a: &(&String, &String, &ClientAgg), b: &(&String, &String, &ClientAgg)| {
            b.2.hits.cmp(&a.2.hits).then_with(|| a.1.cmp(b.1))
        };
        if clients.len() > top {
            clients.select_nth_unstable_by(top, by_hits);
            clients.truncate(top);
        }
        clients.sort_by(by_hits);
        let top_clients = clients
            .into_iter()
            .map(|(org, client, a)| ClientRow {
                client: client.clone(),
                org: (!org.is_empty()).then(|| org.clone()),
                hits: a.hits,
                names: names_per_client.get(&a.index).copied().unwrap_or(0),
                first_seen: a.first,
                last_seen: a.last,
            })
            .collect();
        let mut by_category: Vec<CategoryCount> = self
            .by_category
            .into_iter()
            .flat_map(|(category, feeds)| {
                feeds.into_iter().map(move |(feed, hits)| CategoryCount {
                    category: category.clone(),
                    feed,
                    hits,
                })
            })
            .collect();
        by_category.sort_by(|a, b| {
            b.hits
                .cmp(&a.hits)
                .then_with(|| (&a.category, &a.feed).cmp(&(&b.category, &b.feed)))
        });
        let by_org = if org.is_none() {
            sorted_counts(self.by_org, "(no organisation)")
        } else {
            Vec::new()
        };
        let first_day = self.since.div_euclid(DAY_MS);
        let last_day = (self.until - 1).div_euclid(DAY_MS);
        let timeline = (first_day..=last_day.max(first_day))
            .map(|d| DayCount {
                day: day_name(d),
                hits: self.timeline.get(&d).copied().unwrap_or(0),
            })
            .collect();
        Report {
            org,
            since: self.since,
            until: self.until,
            total: self.total,
            distinct_names: self.names.len() as u64,
            distinct_clients: u64::from(self.client_count),
            by_org,
            by_category,
            by_action: sorted_counts(self.by_action, ""),
            top_names,
            top_clients,
            timeline,
        }
    }
}

fn bump(map: &mut HashMap<String, u64>, key: &str, n: u64) {
    match map.get_mut(key) {
        Some(c) => *c += n,
        None => {
            map.insert(key.to_owned(), n);
        }
    }
}

fn sorted_counts(map: HashMap<String, u64>, empty_key: &str) -> Vec<Count> {
    let mut v: Vec<Count> = map
        .into_iter()
        .map(|(key, hits)| Count {
            key: if key.is_empty() {
                empty_key.to_owned()
            } else {
                key
            },
            hits,
        })
        .collect();
    v.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.key.cmp(&b.key)));
    v
}
