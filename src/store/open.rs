//! Opening the database and its tuning: column families, memtable budget, block cache, open
//! table files, background threads at lower CPU priority, and the memory these take.
//!
//! Invariant: everything here is bounded and independent of the data set's size: memtables by
//! [`MEMTABLE_BUDGET`], cached blocks by [`BLOCK_CACHE`], open table files by [`MAX_OPEN_FILES`].

use super::*;

/// All memtables together (RocksDB's write buffer manager), across column families.
pub const MEMTABLE_BUDGET: usize = 64 << 20;
/// The block cache shared by every column family (data, index and filter blocks).
pub const BLOCK_CACHE: usize = 32 << 20;
/// Table files RocksDB keeps open at once (its default is every file, unbounded): the HTTP
/// front door sizes its connection cap from the open-file limit minus this and a margin.
pub const MAX_OPEN_FILES: i32 = 1024;

/// RocksDB's in-memory footprint, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Active and immutable memtables, every column family.
    pub memtables: u64,
    /// Bytes held by the shared block cache.
    pub block_cache: u64,
    /// Table readers outside the block cache.
    pub table_readers: u64,
}

impl Store {
    /// Opens (creating if missing) the database and starts the writer thread. Blocking.
    pub fn open(path: &Path, sync: bool, max_commit_batch: usize) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        // Group commit already batches; pipelined writes let the WAL and memtable overlap.
        opts.set_enable_pipelined_write(true);
        // One writer thread: concurrent memtable inserts only add splice recomputation per key
        // (10.6 % of broker CPU in an ingest profile, `git log -p -- BENCHMARKS.md`).
        opts.set_allow_concurrent_memtable_write(false);
        opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
        opts.set_max_open_files(MAX_OPEN_FILES);
        // Write flushed/compacted files out as they grow instead of in one burst at the end, so
        // the WAL fsync an acknowledgement waits for is not queued behind megabytes of SST data.
        opts.set_bytes_per_sync(1 << 20);
        // Flushes and compactions yield the CPU to request handling on small machines.
        let mut env = rocksdb::Env::new().map_err(rocks)?;
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
        opts.set_env(&env);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_bloom_filter(10.0, false);
        // Partitioned filters and indexes: a lookup loads one ~4 KiB partition of a file's bloom
        // filter and index, not the whole filter (≈1 MiB for a 300 MB file). With whole filters,
        // a redelivery check against a flushed wamid evicted and re-read (copy plus XXH3
        // checksum) a filter block per file per lookup once the data outgrew the bounded cache:
        // 17 % of the webhook workers' CPU after 45 s of closed-loop ingest (stop 11,
        // in `git log -p -- BENCHMARKS.md`). The partitions' top-level index stays pinned in the cache.
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_pin_top_level_index_and_filter(true);
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        let cfs = ALL_CFS.iter().map(|n| {
            let mut o = cf_opts.clone();
            if *n == CF_REPORT_ROLLUPS {
                o.set_merge_operator_associative(
                    super::rollups::MERGE_OPERATOR,
                    super::rollups::merge,
                );
                // No `max_successive_merges`: a write never merges. A rollup holds every
                // duration and conversation of its hour, so merging at write time (every N
                // operands) rewrote the whole rollup again and again: quadratic in an hour's
                // events (a 42,000-conversation burst took minutes). Operands are merged by
                // flushes and compactions, and by a read of an hour still in the memtable.
            }
            if *n == CF_ORPHAN_STATUS {
                o.set_compaction_filter(super::orphans::FILTER_NAME, super::orphans::filter);
            }
            ColumnFamilyDescriptor::new(*n, o)
        });
        let db = Arc::new(DB::open_cf_descriptors(&opts, path, cfs).map_err(rocks)?);
        let rolled_up_from = super::rollups::rolled_up_from(&db)?;
        let health = Arc::new(writer::Health::new());
        let (tx, handle) = writer::spawn(db.clone(), sync, max_commit_batch, health.clone())
            .map_err(|e| StoreError::Rocks(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db: RwLock::new(Some(db)),
                block_cache: cache,
                writer: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(handle)),
                health,
                rolled_up_from,
            }),
        })
    }

    /// What RocksDB holds in memory now (memtables and block cache are bounded by
    /// [`MEMTABLE_BUDGET`] and [`BLOCK_CACHE`]). Reads counters on the blocking pool, no I/O.
    pub async fn memory(&self) -> Result<MemoryUsage, StoreError> {
        let block_cache = self.inner.block_cache.get_usage() as u64;
        self.read(move |db| {
            let mut usage = MemoryUsage {
                block_cache,
                ..MemoryUsage::default()
            };
            for name in ALL_CFS {
                let h = cf(db, name)?;
                let prop = |p: &str| db.property_int_value_cf(h, p).ok().flatten().unwrap_or(0);
                usage.memtables += prop("rocksdb.cur-size-all-mem-tables");
                usage.table_readers += prop("rocksdb.estimate-table-readers-mem");
            }
            Ok(usage)
        })
        .await
    }
}
