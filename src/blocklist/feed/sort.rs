//! The sort of a feed's entries by key, and the arena copied into their
//! order: a large part of a big feed's compile.

use super::RawEntry;

/// An entry with eight bytes of its key in front (big-endian, zero-padded,
/// so they order as the key does). The keys lie in the arena in file
/// order, so every look at one from a sorted position is a cache miss;
/// with the head at hand a comparison needs none.
#[derive(Clone, Copy)]
struct Headed {
    head: u64,
    entry: RawEntry,
}

/// Eight bytes of `key` from `at`, zero-padded, as a number that orders
/// as the bytes do.
fn chunk(key: &[u8], at: usize) -> u64 {
    let mut head = [0u8; 8];
    let rest = key.get(at..).unwrap_or_default();
    let n = rest.len().min(8);
    head[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(head)
}

/// The entries sorted by key, ties in file order (by arena offset).
///
/// Eight bytes at a time, most significant first: the entries are sorted
/// by their first eight bytes alone, then each run that shares them by
/// the next eight, and so on. A comparison never reads the arena; each
/// entry's key is read once per eight bytes it shares with another. On a
/// large list most names share their first eight bytes with many others
/// (`com.` and four more), and comparing whole keys from scattered places
/// in the arena made the sort superlinear. A second thread takes half of
/// a large input, for the first sort and again for the runs.
pub(super) fn sorted(entries: Vec<RawEntry>, arena: &[u8]) -> Vec<RawEntry> {
    let mut headed: Vec<Headed> = entries
        .into_iter()
        .map(|entry| Headed {
            head: chunk(key_of(arena, &entry), 0),
            entry,
        })
        .collect();
    if headed.len() < 100_000 {
        headed.sort_unstable_by_key(|h| h.head);
        refine(&mut headed, arena, 0);
    } else {
        headed = sorted_halves(headed);
        // Split between two runs near the middle; each half is refined on
        // its own thread.
        let mut mid = headed.len() / 2;
        while mid < headed.len() && headed[mid].head == headed[mid - 1].head {
            mid += 1;
        }
        let (left, right) = headed.split_at_mut(mid);
        std::thread::scope(|s| {
            s.spawn(|| refine(left, arena, 0));
            refine(right, arena, 0);
        });
    }
    headed.into_iter().map(|h| h.entry).collect()
}

fn key_of<'a>(arena: &'a [u8], e: &RawEntry) -> &'a [u8] {
    &arena[e.start as usize..e.start as usize + usize::from(e.len)]
}

/// Sorted by head, each half on its own thread, then merged.
fn sorted_halves(mut headed: Vec<Headed>) -> Vec<Headed> {
    let mid = headed.len() / 2;
    let (left, right) = headed.split_at_mut(mid);
    std::thread::scope(|s| {
        s.spawn(|| left.sort_unstable_by_key(|h| h.head));
        right.sort_unstable_by_key(|h| h.head);
    });
    let mut merged = Vec::with_capacity(headed.len());
    let (mut i, mut j) = (0, mid);
    while i < mid && j < headed.len() {
        if headed[i].head <= headed[j].head {
            merged.push(headed[i]);
            i += 1;
        } else {
            merged.push(headed[j]);
            j += 1;
        }
    }
    merged.extend_from_slice(&headed[i..mid]);
    merged.extend_from_slice(&headed[j..]);
    merged
}

/// Order each run of entries with equal heads, whose keys agree on
/// `depth..depth + 8` (and on everything before).
fn refine(sorted: &mut [Headed], arena: &[u8], depth: usize) {
    let mut i = 0;
    while i < sorted.len() {
        let head = sorted[i].head;
        let end = i + sorted[i..].iter().take_while(|h| h.head == head).count();
        if end - i > 1 {
            refine_run(&mut sorted[i..end], arena, depth);
        }
        i = end;
    }
}

/// Keys that end within the shared eight bytes go first, shortest first
/// (a shorter one is a prefix of a longer one), equal keys in file order;
/// the rest are ordered by their next eight bytes. Keys are at most 255
/// bytes, so this goes at most 32 deep.
fn refine_run(run: &mut [Headed], arena: &[u8], depth: usize) {
    let next = depth + 8;
    for h in run.iter_mut() {
        let len = usize::from(h.entry.len);
        h.head = if len <= next {
            len as u64
        } else {
            chunk(key_of(arena, &h.entry), next)
        };
    }
    run.sort_unstable_by_key(|h| (usize::from(h.entry.len) > next, h.head, h.entry.start));
    let ended = run
        .iter()
        .take_while(|h| usize::from(h.entry.len) <= next)
        .count();
    refine(&mut run[ended..], arena, next);
}

/// A new arena with the keys in the entries' (sorted) order, each entry
/// pointed at its copy. The merge and the fst builder then read the keys
/// front to back instead of at random: on a 10 M-name list that was most
/// of the merge's own time. The copy's reads are as scattered, but they
/// do not wait on each other.
pub(super) fn in_order(arena: &[u8], entries: &mut [RawEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(arena.len());
    for e in entries.iter_mut() {
        let start = out.len();
        out.extend_from_slice(&arena[e.start as usize..e.start as usize + usize::from(e.len)]);
        // No larger than the arena, whose offsets fit.
        e.start = u32::try_from(start).unwrap_or(u32::MAX);
    }
    out
}
