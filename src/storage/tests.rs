use std::time::Duration;

use super::*;

fn temp_engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    (dir, engine)
}

const T: Table<(String, u64), Raw> = USERIDFILTERID_FILTER_TEST;
// Tests write through a table whose key shape is (string, u64).
const USERIDFILTERID_FILTER_TEST: Table<(String, u64), Raw> = Table::new("useridfilterid_filter");

#[test]
fn batch_writes_all_or_nothing() {
    let (_dir, engine) = temp_engine();
    let mut batch = engine.batch();
    batch.put(T, &("a".into(), 1), &Raw(b"one".to_vec()));
    batch.put(GLOBAL, &"x".to_owned(), &Raw(b"two".to_vec()));
    // Not visible before commit.
    assert!(engine.get(T, &("a".into(), 1)).unwrap().is_none());
    batch.commit().unwrap();
    assert_eq!(
        engine.get(T, &("a".into(), 1)).unwrap(),
        Some(Raw(b"one".to_vec()))
    );
    assert_eq!(
        engine.get(GLOBAL, &"x".to_owned()).unwrap(),
        Some(Raw(b"two".to_vec()))
    );

    // A dropped batch writes nothing and does not hold back the counter.
    let mut batch = engine.batch();
    batch.put(T, &("b".into(), 1), &Raw(vec![1]));
    let n = batch.next_count().unwrap();
    drop(batch);
    assert!(engine.get(T, &("b".into(), 1)).unwrap().is_none());
    assert_eq!(engine.visible_count(), n);
}

#[test]
fn prefix_scan_returns_only_the_prefix_in_order() {
    let (_dir, engine) = temp_engine();
    let mut batch = engine.batch();
    for (s, n) in [("ab", 1u64), ("a", 300), ("a", 2), ("b", 0), ("a", 255)] {
        batch.put(T, &(s.to_owned(), n), &Raw(vec![]));
    }
    batch.commit().unwrap();
    let got: Vec<u64> = engine
        .scan_prefix(T, &prefix(&("a".to_owned(),)))
        .unwrap()
        .into_iter()
        .map(|((_, n), _)| n)
        .collect();
    assert_eq!(got, vec![2, 255, 300]);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path()).unwrap();
        let mut batch = engine.batch();
        batch.put(
            GLOBAL,
            &SCHEMA_KEY.to_owned(),
            &Raw((SCHEMA_VERSION + 1).to_be_bytes().to_vec()),
        );
        batch.commit().unwrap();
    }
    let err = Engine::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("newer than this bigd supports"), "{err}");
}

#[test]
fn counter_resumes_above_every_count_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let engine = Engine::open(dir.path()).unwrap();
        let mut last = 0;
        for _ in 0..1_500 {
            let mut batch = engine.batch();
            last = batch.next_count().unwrap();
            batch.commit().unwrap();
        }
        last
    };
    let engine = Engine::open(dir.path()).unwrap();
    let mut batch = engine.batch();
    assert!(batch.next_count().unwrap() > last);
}

#[tokio::test]
async fn watch_registered_before_read_never_misses_a_write() {
    let (_dir, engine) = temp_engine();
    let key_prefix = prefix(&("room".to_owned(),));
    for i in 0..200u64 {
        // Register, then "read", then a write races in before we sleep.
        let mut watch = engine.watch(T, key_prefix.clone());
        let writer = {
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || {
                let mut batch = engine.batch();
                batch.put(T, &("room".to_owned(), i), &Raw(vec![]));
                batch.commit().unwrap();
            })
        };
        if i % 2 == 0 {
            writer.await.unwrap(); // the write lands before we start waiting
        }
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .expect("woken")
            .unwrap();
    }
}

#[tokio::test]
async fn watch_ignores_other_prefixes() {
    let (_dir, engine) = temp_engine();
    let mut watch = engine.watch(T, prefix(&("a".to_owned(),)));
    let mut batch = engine.batch();
    batch.put(T, &("ab".to_owned(), 1), &Raw(vec![]));
    batch.commit().unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), watch.changed())
            .await
            .is_err()
    );
    drop(watch);
    // The abandoned registration is pruned on the next matching write.
    let mut batch = engine.batch();
    batch.put(T, &("a".to_owned(), 1), &Raw(vec![]));
    batch.commit().unwrap();
    assert_eq!(engine.inner.watchers.registered(T.name), 0);
}

#[test]
fn counts_become_visible_only_after_commit_across_threads() {
    let (_dir, engine) = temp_engine();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                for i in 0..250u64 {
                    let mut batch = engine.batch();
                    last = batch.next_count().unwrap();
                    batch.put(T, &(format!("t{t}"), last), &Raw(i.to_be_bytes().to_vec()));
                    batch.commit().unwrap();
                }
                last
            })
        })
        .collect();
    let highest = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .max()
        .unwrap();
    // Once every writer is done, everything up to the highest count is visible,
    // and every count a reader can see has its data stored.
    assert_eq!(engine.visible_count(), highest);
    let total: usize = (0..4)
        .map(|t| {
            engine
                .scan_prefix(T, &prefix(&(format!("t{t}"),)))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(total, 1_000);
}

#[tokio::test]
async fn watchers_wake_only_once_the_write_is_visible() {
    let (_dir, engine) = temp_engine();
    let p = prefix(&("room".to_owned(),));
    let mut watch = engine.watch(T, p.clone());

    // `low` takes a count first but commits last (it writes elsewhere).
    let mut low = engine.batch();
    low.next_count().unwrap();
    low.put(T, &("other".to_owned(), 1), &Raw(vec![]));
    let mut high = engine.batch();
    let n = high.next_count().unwrap();
    high.put(T, &("room".to_owned(), n), &Raw(vec![]));
    high.commit().unwrap();

    // Committed, but hidden behind `low`: a woken reader would find nothing.
    assert!(engine.visible_count() < n);
    assert!(!watch.has_changed().unwrap());

    low.commit().unwrap();
    assert_eq!(engine.visible_count(), n);
    tokio::time::timeout(Duration::from_secs(1), watch.changed())
        .await
        .expect("woken")
        .unwrap();

    // The same holds when the holding batch is abandoned instead of committed.
    let mut watch = engine.watch(T, p);
    let mut abandoned = engine.batch();
    abandoned.next_count().unwrap();
    let mut high = engine.batch();
    let n = high.next_count().unwrap();
    high.put(T, &("room".to_owned(), n), &Raw(vec![]));
    high.commit().unwrap();
    assert!(!watch.has_changed().unwrap());
    drop(abandoned);
    tokio::time::timeout(Duration::from_secs(1), watch.changed())
        .await
        .expect("woken")
        .unwrap();
}

#[test]
fn reverse_scan_stays_in_the_prefix_below_the_bound() {
    let (_dir, engine) = temp_engine();
    let mut batch = engine.batch();
    for (s, n) in [("a", 1u64), ("a", 5), ("a", 9), ("b", 2), ("ab", 3)] {
        batch.put(T, &(s.to_owned(), n), &Raw(vec![]));
    }
    batch.commit().unwrap();
    let p = prefix(&("a".to_owned(),));
    let got = |before: u64, limit| -> Vec<u64> {
        engine
            .scan_rev(T, &p, &("a".to_owned(), before).encode(), limit)
            .unwrap()
            .into_iter()
            .map(|((_, n), _)| n)
            .collect()
    };
    assert_eq!(got(9, 10), vec![5, 1]);
    assert_eq!(got(100, 2), vec![9, 5]);
    assert_eq!(got(1, 10), Vec::<u64>::new());
}

#[test]
fn lazy_iteration_in_both_directions() {
    let (_dir, engine) = temp_engine();
    let mut batch = engine.batch();
    for (s, n) in [("a", 1u64), ("a", 5), ("a", 9), ("b", 2), ("ab", 3)] {
        batch.put(T, &(s.to_owned(), n), &Raw(vec![]));
    }
    batch.commit().unwrap();
    let p = prefix(&("a".to_owned(),));
    let collect = |start: u64, forward: bool| -> Vec<u64> {
        engine
            .iter(T, &p, &("a".to_owned(), start).encode(), forward)
            .map(|r| r.unwrap().0.1)
            .collect()
    };
    assert_eq!(collect(5, true), vec![5, 9]);
    assert_eq!(collect(5, false), vec![1], "backwards excludes the start");
    assert_eq!(collect(6, false), vec![5, 1]);
    assert_eq!(collect(u64::MAX, false), vec![9, 5, 1]);
    assert_eq!(collect(0, true), vec![1, 5, 9]);
    assert_eq!(collect(10, true), Vec::<u64>::new());
}

#[test]
fn prefix_successor_is_the_first_key_past_the_prefix() {
    assert_eq!(super::prefix_successor(b"ab"), Some(b"ac".to_vec()));
    assert_eq!(super::prefix_successor(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(super::prefix_successor(b"\xff\xff"), None);
}

#[test]
fn bounded_iteration_stays_in_the_prefix_both_ways() {
    let (_dir, db) = temp_engine();
    let table = USERIDCOUNT_PUSHLOG;
    let mut batch = db.batch();
    for (user, n) in [
        ("@a:x", 1u64),
        ("@a:x", 2),
        ("@b:x", 1),
        ("@b:x", 2),
        ("@c:x", 7),
    ] {
        batch.put(table, &(user.try_into().unwrap(), n), &Raw(vec![1]));
    }
    batch.commit().unwrap();
    let b = prefix(&(ruma::OwnedUserId::try_from("@b:x").unwrap(),));
    let forward: Vec<u64> = db
        .iter(table, &b, &b, true)
        .map(|r| r.unwrap().0.1)
        .collect();
    assert_eq!(forward, [1, 2]);
    let end = (ruma::OwnedUserId::try_from("@b:x").unwrap(), u64::MAX).encode();
    let backward: Vec<u64> = db
        .iter(table, &b, &end, false)
        .map(|r| r.unwrap().0.1)
        .collect();
    assert_eq!(backward, [2, 1]);
}

/// Live subscriptions read `published_count` after checking their watches:
/// every write it covers must already have woken the watches on its keys.
#[test]
fn published_count_never_runs_ahead_of_wake_ups() {
    let (_dir, engine) = temp_engine();
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 300;
    // One key (and one watch, registered before any write) per write.
    let watches: Vec<Vec<Watch>> = (0..WRITERS)
        .map(|t| {
            (0..PER_WRITER)
                .map(|i| engine.watch(T, (format!("w{t}"), i as u64).encode()))
                .collect()
        })
        .collect();
    // The count each write took, once it has one (0 before).
    let counts: Arc<Vec<Vec<std::sync::atomic::AtomicU64>>> = Arc::new(
        (0..WRITERS)
            .map(|_| (0..PER_WRITER).map(|_| Default::default()).collect())
            .collect(),
    );
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (engine, counts) = (engine.clone(), counts.clone());
            std::thread::spawn(move || {
                for i in 0..PER_WRITER {
                    let mut batch = engine.batch();
                    let n = batch.next_count().unwrap();
                    counts[t][i].store(n, std::sync::atomic::Ordering::SeqCst);
                    batch.put(T, &(format!("w{t}"), i as u64), &Raw(vec![]));
                    batch.commit().unwrap();
                }
            })
        })
        .collect();
    let check = || {
        let published = engine.published_count();
        for t in 0..WRITERS {
            for i in 0..PER_WRITER {
                let n = counts[t][i].load(std::sync::atomic::Ordering::SeqCst);
                if n != 0 && n <= published {
                    assert!(
                        watches[t][i].has_changed().unwrap(),
                        "write {n} is published ({published}) but its watch was not woken"
                    );
                }
            }
        }
    };
    while writers.iter().any(|w| !w.is_finished()) {
        check();
    }
    for w in writers {
        w.join().unwrap();
    }
    check();
    assert_eq!(engine.published_count(), engine.visible_count());
}

#[test]
fn a_watched_cache_reads_again_only_after_a_write_to_its_prefix() {
    let (_dir, engine) = temp_engine();
    let cache: WatchedCache<String, usize> = WatchedCache::new(8);
    let reads = std::cell::Cell::new(0);
    let count_a = || {
        let p = prefix(&("a".to_owned(),));
        cache.get_or_read(
            "a",
            || engine.watch(T, p.clone()),
            || {
                reads.set(reads.get() + 1);
                Ok(engine.scan_prefix(T, &p)?.len())
            },
        )
    };
    let put = |key: &str, n: u64| {
        let mut batch = engine.batch();
        batch.put(T, &(key.to_owned(), n), &Raw(vec![]));
        batch.commit().unwrap();
    };
    put("a", 1);
    assert_eq!(count_a().unwrap(), 1);
    assert_eq!(count_a().unwrap(), 1);
    assert_eq!(reads.get(), 1, "the second answer came from memory");
    put("b", 1);
    assert_eq!(count_a().unwrap(), 1);
    assert_eq!(reads.get(), 1, "another prefix's write keeps the entry");
    put("a", 2);
    assert_eq!(count_a().unwrap(), 2, "a write to the prefix is seen");
    assert_eq!(reads.get(), 2);
}
