//! The cache file: [`CacheFile`] of [`Entry`]s by [`MatmulAutotuneKey`], read, parsed and
//! rewritten atomically (see the [parent module](super) for the format).

use super::key::MatmulAutotuneKey;
use super::CACHE_VERSION;
use crate::gpu::kernels::MatmulTile;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One cached decision.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// The chosen variant.
    pub tile: MatmulTile,
    /// Its rate on `shape`, GFLOP/s (2·M·N·K / median time); 0 when it was not timed.
    pub gflops: f64,
    /// The shape it was timed on, [M, N, K].
    pub shape: [usize; 3],
    /// Every candidate tried: its name and GFLOP/s, or why it was dropped.
    pub tried: BTreeMap<String, String>,
    /// Seconds since the Unix epoch when it was tuned.
    pub tuned_at: u64,
}

/// One key and its decision in the cache file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CacheRecord {
    /// Adapter, driver, shader and product class.
    pub key: MatmulAutotuneKey,
    /// The decision for it.
    pub entry: Entry,
}

/// The cache file: `{"version": 2, "entries": [{"key": {..}, "entry": {..}}, ..]}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CacheFile {
    /// The file format's version; another version's file is ignored.
    pub version: u32,
    /// Every decision, one per key.
    pub entries: Vec<CacheRecord>,
}

pub(crate) type Entries = HashMap<MatmulAutotuneKey, Entry>;

impl CacheFile {
    /// The file for `entries`, in a stable order (by key as text).
    pub(crate) fn of(entries: &Entries) -> Self {
        let mut records: Vec<CacheRecord> = entries
            .iter()
            .map(|(k, e)| CacheRecord {
                key: k.clone(),
                entry: e.clone(),
            })
            .collect();
        records.sort_by_cached_key(|r| r.key.to_string());
        CacheFile {
            version: CACHE_VERSION,
            entries: records,
        }
    }
}

/// The entries of a cache file, or why it cannot be used (another format version, or not a
/// cache file at all). A key listed twice keeps its last entry.
pub(crate) fn parse_cache(bytes: &[u8]) -> std::result::Result<Entries, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match v.get("version").and_then(|x| x.as_u64()) {
        Some(n) if n == CACHE_VERSION as u64 => {}
        Some(n) => return Err(format!("format version {n}, not {CACHE_VERSION}")),
        None => return Err("no format version".into()),
    }
    let f: CacheFile = serde_json::from_value(v).map_err(|e| e.to_string())?;
    Ok(f.entries.into_iter().map(|r| (r.key, r.entry)).collect())
}

/// The entries in the file at `path`; none when there is no file or it cannot be used (then
/// with a log line; never an error).
pub(crate) fn load_file(path: Option<&Path>) -> Entries {
    let Some(path) = path else {
        return Entries::new();
    };
    let Ok(bytes) = std::fs::read(path) else {
        return Entries::new();
    };
    parse_cache(&bytes).unwrap_or_else(|why| {
        log::warn!(
            "autotune cache {} ignored ({why}); retuning",
            path.display()
        );
        Entries::new()
    })
}

/// Apply `change` to the entries on disk (re-reading the file first, so concurrent processes
/// lose at most each other's latest entry, never the file).
pub(crate) fn update_file(path: Option<&Path>, change: impl FnOnce(&mut Entries)) {
    let Some(path) = path else {
        return;
    };
    let mut entries = load_file(Some(path));
    change(&mut entries);
    let write = || -> std::result::Result<(), String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        let json =
            serde_json::to_vec_pretty(&CacheFile::of(&entries)).map_err(|e| e.to_string())?;
        crate::util::atomic_write(path, &json).map_err(|e| e.to_string())
    };
    if let Err(e) = write() {
        log::warn!("autotune: could not write {}: {e}", path.display());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gpu::autotune::key::tests::test_key;
    use crate::gpu::autotune::ShapeClass;
    use crate::gpu::kernels::MatmulSpec;

    pub(crate) fn test_entry(tile: MatmulTile) -> Entry {
        Entry {
            tile,
            gflops: 31.5,
            shape: [100, 512, 784],
            tried: [(tile.to_string(), "31.50 GFLOP/s".to_string())]
                .into_iter()
                .collect(),
            tuned_at: 1,
        }
    }

    #[test]
    fn key_round_trips_through_the_cache_json() {
        let class = ShapeClass::of(&MatmulSpec::new(100, 512, 784));
        let mut entries = Entries::new();
        entries.insert(
            test_key("Mesa 23.2.1", class),
            test_entry(MatmulTile::direct(2, 8, 16).swapped()),
        );
        // The driver version is part of the key: another Mesa is another entry.
        entries.insert(
            test_key("Mesa 24.0.0", class),
            test_entry(MatmulTile::DEFAULT),
        );
        assert_eq!(entries.len(), 2);
        let json = serde_json::to_string_pretty(&CacheFile::of(&entries)).unwrap();
        for want in [
            "\"version\": 2",
            "\"driver_info\": \"Mesa 23.2.1\"",
            "\"epilogue\": \"BiasRelu\"",
            "\"algo\": \"Direct\"",
            "\"m4\": true",
        ] {
            assert!(json.contains(want), "{want} missing in {json}");
        }
        assert_eq!(parse_cache(json.as_bytes()).unwrap(), entries);
        // Written in a stable order.
        assert_eq!(
            serde_json::to_string_pretty(&CacheFile::of(&parse_cache(json.as_bytes()).unwrap()))
                .unwrap(),
            json
        );
        assert_eq!(
            test_key("Mesa 23.2.1", class).to_string(),
            "llvmpipe (LLVM 15.0.6, 256 bits)|Vulkan|llvmpipe Mesa 23.2.1|0123456789abcdef|\
             m128.n512.k1024.a111|nt|BiasRelu+="
        );
    }

    #[test]
    fn cache_file_of_an_old_or_foreign_version_is_ignored() {
        // Version 1 keyed entries by a string.
        let v1 = r#"{"version": 1, "entries": {"llvmpipe|Vulkan|llvmpipe Mesa|0123|m128.n512.k1024.a111|nt|Bias": {"tile": {"algo": "Direct", "wg_x": 8, "wg_y": 1, "tm": 8, "tn": 8, "bk": 4, "swap": false}, "gflops": 1.0, "shape": [100, 512, 784], "tried": {}, "tuned_at": 1}}}"#;
        let err = parse_cache(v1.as_bytes()).unwrap_err();
        assert!(err.contains("version 1"), "{err}");
        // A later version, even with today's layout.
        let mut entries = Entries::new();
        let key = test_key("Mesa 23.2.1", ShapeClass::of(&MatmulSpec::new(3, 5, 7)));
        entries.insert(key.clone(), test_entry(MatmulTile::DEFAULT));
        let mut later = CacheFile::of(&entries);
        later.version = CACHE_VERSION + 1;
        let err = parse_cache(&serde_json::to_vec(&later).unwrap()).unwrap_err();
        assert!(err.contains("format version 3"), "{err}");
        // Not a cache file at all.
        for junk in [
            "",
            "{}",
            "[1, 2]",
            "not json",
            r#"{"version": 2, "entries": 7}"#,
        ] {
            assert!(parse_cache(junk.as_bytes()).is_err(), "{junk:?}");
        }
        // On disk: ignored, never an error, and replaced by the next save.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("autotune.json");
        std::fs::write(&path, v1).unwrap();
        assert!(load_file(Some(&path)).is_empty());
        update_file(Some(&path), |f| {
            f.insert(key.clone(), test_entry(MatmulTile::DEFAULT));
        });
        let back = load_file(Some(&path));
        assert_eq!(back.len(), 1);
        assert_eq!(back[&key].tile, MatmulTile::DEFAULT);
        // A missing file is empty too.
        assert!(load_file(Some(&dir.path().join("none.json"))).is_empty());
    }
}
