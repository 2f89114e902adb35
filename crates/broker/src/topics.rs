//! The topics this node holds: creation, deletion, configuration, persisted under
//! `<data>/topics/<name>/topic.json` next to one log directory per partition.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use strata_record::{Timestamp, TopicName};
use strata_storage::{Durability, SyncGroup, WriteAheadConfig, WriteAheadReplay};

use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::topic_config::TopicConfig;

const META_FILE: &str = "topic.json";
/// Most partitions one topic may have: each is a directory and a few open files.
pub const MAX_PARTITIONS: u32 = 10_000;

/// What is persisted about a topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    pub config: TopicConfig,
    pub created_ms: i64,
}

#[derive(Debug)]
pub struct Topic {
    pub name: TopicName,
    meta: RwLock<TopicMeta>,
    /// The partitions this node holds a replica of, by id: every one on a single node, the
    /// assigned ones in a cluster.
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    pub fn meta(&self) -> TopicMeta {
        self.meta.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The partition `id`, if this node holds a replica of it.
    pub fn partition(&self, id: u32) -> Result<&Arc<Partition>> {
        match self.partitions.binary_search_by_key(&id, |p| p.id()) {
            Ok(i) => Ok(&self.partitions[i]),
            Err(_) if id < self.partition_count() => {
                Err(BrokerError::NotHosted { topic: self.name.to_string(), partition: id })
            }
            Err(_) => {
                Err(BrokerError::UnknownPartition { topic: self.name.to_string(), partition: id })
            }
        }
    }

    /// Number of partitions of the topic (held here or not).
    pub fn partition_count(&self) -> u32 {
        self.meta.read().unwrap_or_else(|e| e.into_inner()).partitions
    }
}

/// All topics, by name.
#[derive(Debug)]
pub struct Topics {
    root: PathBuf,
    trash: PathBuf,
    durability: Durability,
    /// On a single node with fsync on every append: the node-wide group commit every
    /// partition's log joins, so partitions written at the same time share `syncfs` calls.
    sync_group: Option<Arc<SyncGroup>>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Names of topics being created right now.
    creating: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Releases a topic name reserved for creation, whatever the outcome.
struct Reservation<'a> {
    creating: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    name: &'a str,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.creating.lock().unwrap_or_else(|e| e.into_inner()).remove(self.name);
    }
}

fn write_meta(dir: &Path, meta: &TopicMeta) -> Result<()> {
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(meta).expect("topic metadata serialises");
    let write = || -> std::io::Result<()> {
        let file = fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut &file, &bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(META_FILE))?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(BrokerError::io(format!("writing {}", dir.join(META_FILE).display())))
}

fn open_partitions(
    name: &TopicName,
    dir: &Path,
    meta: &TopicMeta,
    durability: Durability,
    sync_group: Option<&Arc<SyncGroup>>,
    mut replay: Option<&mut WriteAheadReplay>,
) -> Result<Vec<Arc<Partition>>> {
    open_logs_in_parallel(name, dir, meta, durability)?
        .into_iter()
        .map(|partition| {
            if let Some(replay) = replay.as_deref_mut()
                && replay.replay_into(partition.log())? > 0
            {
                partition.refresh_high_watermark();
            }
            if let Some(group) = sync_group {
                partition.log().join_sync_group(group.clone());
            }
            Ok(Arc::new(partition))
        })
        .collect()
}

/// Opens a topic's partitions, a few at a time: after a crash each one's recovery reads and
/// checks its whole active segment, and a node with many partitions would otherwise read
/// them one after another (1,000 partitions, 1.6 GB, page cache dropped: ~2.8 s in a row).
fn open_logs_in_parallel(
    name: &TopicName,
    dir: &Path,
    meta: &TopicMeta,
    durability: Durability,
) -> Result<Vec<Partition>> {
    let count = meta.partitions as usize;
    // Recovery waits on the disk more than it uses a core: four reads in flight even on two.
    let threads = 4;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let open_next = || {
        let mut opened = Vec::new();
        loop {
            let p = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if p >= count {
                return opened;
            }
            let config = meta.config.log_config(durability);
            let path = dir.join(p.to_string());
            opened.push((p, Partition::open(name.clone(), p as u32, &path, config)));
        }
    };
    let mut opened: Vec<(usize, Result<Partition>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(count)).map(|_| scope.spawn(open_next)).collect();
        workers.into_iter().flat_map(|w| w.join().expect("opening a partition panicked")).collect()
    });
    opened.sort_unstable_by_key(|(p, _)| *p);
    opened.into_iter().map(|(_, partition)| partition).collect()
}

impl Topics {
    /// Opens every topic under `<data_dir>/topics`, removing what an interrupted create or
    /// delete left behind.
    ///
    /// What a crash left in the write-ahead files (`<data_dir>/wal`) is replayed into the
    /// partitions before they serve, whatever `durability` is now. With fsync on every append,
    /// rounds of at least `write_ahead_min_partitions` partitions (0: none) go through the
    /// write-ahead file.
    pub fn open(
        data_dir: &Path,
        durability: Durability,
        write_ahead_min_partitions: usize,
    ) -> Result<Topics> {
        let root = data_dir.join("topics");
        let trash = data_dir.join("trash");
        for dir in [&root, &trash] {
            fs::create_dir_all(dir)
                .map_err(BrokerError::io(format!("creating {}", dir.display())))?;
        }
        if let Ok(entries) = fs::read_dir(&trash) {
            for entry in entries.flatten() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        // Scanned before the group opens: the group starts a new file after the crash's,
        // and the replay deletes every file it scanned once each partition replayed.
        let wal_dir = data_dir.join("wal");
        let mut replay = WriteAheadReplay::open(&wal_dir)?;
        let sync_group = match durability {
            Durability::EveryAppend => {
                let write_ahead = (write_ahead_min_partitions > 0).then(|| WriteAheadConfig {
                    min_logs: write_ahead_min_partitions,
                    ..WriteAheadConfig::new(&wal_dir)
                });
                SyncGroup::open(&root, write_ahead)?.map(Arc::new)
            }
            _ => None,
        };
        let mut topics = BTreeMap::new();
        let entries =
            fs::read_dir(&root).map_err(BrokerError::io(format!("listing {}", root.display())))?;
        for entry in entries {
            let dir = entry.map_err(BrokerError::io("listing topics"))?.path();
            let meta_path = dir.join(META_FILE);
            let Ok(bytes) = fs::read(&meta_path) else {
                tracing::warn!(dir = %dir.display(), "removing a topic directory whose creation never finished");
                let _ = fs::remove_dir_all(&dir);
                continue;
            };
            let meta: TopicMeta = serde_json::from_slice(&bytes).map_err(|e| BrokerError::Io {
                context: format!("reading {}", meta_path.display()),
                source: e.into(),
            })?;
            let name = TopicName::new(&meta.name)?;
            let partitions = open_partitions(
                &name,
                &dir,
                &meta,
                durability,
                sync_group.as_ref(),
                replay.as_mut(),
            )?;
            topics.insert(
                meta.name.clone(),
                Arc::new(Topic { name, meta: RwLock::new(meta), partitions }),
            );
        }
        if let Some(replay) = replay {
            replay.finish()?;
        }
        tracing::info!(topics = topics.len(), "topics opened");
        Ok(Topics {
            root,
            trash,
            durability,
            sync_group,
            topics: RwLock::new(topics),
            creating: Default::default(),
        })
    }

    pub fn get(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_owned()))
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        self.get(topic)?.partition(partition).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Creates a topic: partition logs first, `topic.json` last, so a crash in between leaves a
    /// directory that the next start removes.
    pub fn create(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        nodes: u32,
        changes: &HashMap<String, String>,
    ) -> Result<Arc<Topic>> {
        let topic_name =
            TopicName::new(name).map_err(|e| BrokerError::InvalidArgument(e.to_string()))?;
        // proto3 sends 0 for a field left out: it means "the default", 1.
        let partitions = partitions.max(1);
        let replication_factor = replication_factor.max(1);
        if partitions > MAX_PARTITIONS {
            return Err(BrokerError::InvalidArgument(format!(
                "partitions must be in [1, {MAX_PARTITIONS}], not {partitions}"
            )));
        }
        if replication_factor > nodes {
            return Err(BrokerError::InvalidArgument(format!(
                "replication factor must be in [1, {nodes}] (the number of nodes), not {replication_factor}"
            )));
        }
        let config = TopicConfig::default().with_changes(changes)?;
        // Reserve the name, then create the partitions without holding the topics lock: opening
        // thousands of logs must not stall every request that looks a topic up.
        {
            let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
            let mut creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
            if topics.contains_key(name) || !creating.insert(name.to_owned()) {
                return Err(BrokerError::TopicExists(name.to_owned()));
            }
        }
        let _reservation = Reservation { creating: &self.creating, name };
        let dir = self.root.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .map_err(BrokerError::io(format!("clearing {}", dir.display())))?;
        }
        fs::create_dir_all(&dir).map_err(BrokerError::io(format!("creating {}", dir.display())))?;
        let meta = TopicMeta {
            name: name.to_owned(),
            partitions,
            replication_factor,
            config,
            created_ms: Timestamp::now().0,
        };
        let opened = open_partitions(
            &topic_name,
            &dir,
            &meta,
            self.durability,
            self.sync_group.as_ref(),
            None,
        );
        let opened = opened.and_then(|p| write_meta(&dir, &meta).map(|()| p));
        let partitions = match opened {
            Ok(p) => p,
            Err(err) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(err);
            }
        };
        let topic = Arc::new(Topic { name: topic_name, meta: RwLock::new(meta), partitions });
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), topic.clone());
        tracing::info!(topic = name, partitions = topic.partitions.len(), "topic created");
        Ok(topic)
    }

    /// Changes configuration keys of a topic and applies them to its open logs.
    pub fn alter(&self, name: &str, changes: &HashMap<String, String>) -> Result<Arc<Topic>> {
        let topic = self.get(name)?;
        let mut meta = topic.meta.write().unwrap_or_else(|e| e.into_inner());
        let config = meta.config.with_changes(changes)?;
        let mut next = meta.clone();
        next.config = config;
        {
            // Written only while this topic is still the one of its name: a delete (which
            // removes it under the write lock) and a create of the same name must not find its
            // metadata written into the new directory.
            let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
            if !topics.get(name).is_some_and(|t| Arc::ptr_eq(t, &topic)) {
                return Err(BrokerError::UnknownTopic(name.to_owned()));
            }
            write_meta(&self.root.join(name), &next)?;
        }
        for partition in &topic.partitions {
            partition.log().set_config(next.config.log_config(self.durability))?;
        }
        *meta = next;
        drop(meta);
        tracing::info!(topic = name, ?changes, "topic altered");
        Ok(topic)
    }

    /// Forgets a topic and deletes its data (moved to the trash first, so a crash never leaves
    /// half a topic under its name).
    pub fn delete(&self, name: &str) -> Result<()> {
        // The name stays reserved (no topic of that name can be created) until the directory
        // is in the trash; the topics lock is not held meanwhile, so requests for other topics
        // do not wait for the logs to retire.
        let topic = {
            let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
            let mut creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
            if !topics.contains_key(name) || !creating.insert(name.to_owned()) {
                return Err(BrokerError::UnknownTopic(name.to_owned()));
            }
            topics.remove(name).expect("the topic was just seen")
        };
        let _reservation = Reservation { creating: &self.creating, name };
        // Requests in flight may still hold the partitions: their logs must not write at the
        // old paths once a new topic can take the name.
        for partition in &topic.partitions {
            partition.log().retire();
        }
        let target = self.trash.join(format!("{name}-{}", Timestamp::now().0));
        fs::rename(self.root.join(name), &target)
            .map_err(BrokerError::io(format!("deleting topic {name}")))?;
        let _ = fs::File::open(&self.root).and_then(|d| d.sync_all());
        std::thread::spawn(move || {
            if let Err(err) = fs::remove_dir_all(&target) {
                tracing::warn!(dir = %target.display(), error = %err, "could not remove deleted topic's data");
            }
        });
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }
}

/// Topics of a cluster node: their metadata comes from the controller, and the cluster's
/// reconciler installs and removes them here (see `cluster.rs`).
impl Topics {
    /// An empty set of topics over `<data_dir>/replicas` (nothing is loaded: the controller's
    /// metadata says what exists).
    pub fn open_replicated(data_dir: &Path, durability: Durability) -> Result<Topics> {
        let root = data_dir.join("replicas");
        let trash = data_dir.join("trash");
        for dir in [&root, &trash] {
            fs::create_dir_all(dir)
                .map_err(BrokerError::io(format!("creating {}", dir.display())))?;
        }
        Ok(Topics {
            root,
            trash,
            durability,
            // Replicated logs are made durable by their Raft groups.
            sync_group: None,
            topics: RwLock::new(BTreeMap::new()),
            creating: Default::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Makes a topic whose partitions are open visible to requests (replacing the installed
    /// one of that name, if any: a change of the partitions held here).
    pub fn install(
        &self,
        meta: TopicMeta,
        mut partitions: Vec<Arc<Partition>>,
    ) -> Result<Arc<Topic>> {
        partitions.sort_by_key(|p| p.id());
        let name = TopicName::new(&meta.name)?;
        let topic = Arc::new(Topic { name, meta: RwLock::new(meta), partitions });
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Hides a topic from requests and returns it, for its replicas to be stopped.
    pub fn uninstall(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.write().unwrap_or_else(|e| e.into_inner()).remove(name)
    }

    /// Moves a directory under the root to the trash and deletes it in the background.
    pub fn discard(&self, dir: &Path) {
        let Some(name) = dir.file_name() else { return };
        let target = self.trash.join(format!("{}-{}", name.to_string_lossy(), Timestamp::now().0));
        match fs::rename(dir, &target) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(err) => {
                // Left in place, it would be opened again by a replica of the same path (one
                // moved back): removed here instead.
                tracing::warn!(dir = %dir.display(), error = %err, "could not move to the trash; removing in place");
                if let Err(err) = fs::remove_dir_all(dir) {
                    tracing::warn!(dir = %dir.display(), error = %err, "could not remove deleted data");
                }
                return;
            }
        }
        std::thread::spawn(move || {
            if let Err(err) = fs::remove_dir_all(&target) {
                tracing::warn!(dir = %target.display(), error = %err, "could not remove deleted data");
            }
        });
    }

    /// Applies new configuration to an installed topic (the controller already accepted it).
    pub fn set_meta(&self, topic: &Topic, meta: TopicMeta) -> Result<()> {
        for partition in &topic.partitions {
            let config = meta.config.log_config(self.durability);
            partition.log().set_config(strata_raft::replicated_log_config(config))?;
        }
        *topic.meta.write().unwrap_or_else(|e| e.into_inner()) = meta;
        Ok(())
    }
}

impl Topics {
    /// Closes every partition log cleanly (at shutdown, when nothing else holds them).
    pub fn close(self) {
        let topics = self.topics.into_inner().unwrap_or_else(|e| e.into_inner());
        for (name, topic) in topics {
            let Ok(topic) = Arc::try_unwrap(topic) else {
                tracing::warn!(topic = %name, "topic still in use at shutdown; it will be recovered on start");
                continue;
            };
            for partition in topic.partitions {
                match Arc::try_unwrap(partition) {
                    Ok(partition) => {
                        if let Err(err) = partition.close() {
                            tracing::warn!(topic = %name, error = %err, "closing partition log");
                        }
                    }
                    Err(_) => tracing::warn!(topic = %name, "partition still in use at shutdown"),
                }
            }
        }
    }
}
