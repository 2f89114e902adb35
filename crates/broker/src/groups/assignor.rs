//! Server-side partition assignors (KIP-848 style: the coordinator decides, members follow).

use std::collections::{BTreeMap, BTreeSet};

/// A topic-partition.
pub type TopicPartition = (String, u32);

/// How a group spreads partitions over its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Per topic, contiguous ranges of partitions to the members subscribed to it, in member
    /// order (Kafka's RangeAssignor): members of co-partitioned topics get matching partitions.
    Range,
    /// All subscribed partitions spread as evenly as possible across members.
    Uniform,
}

impl Assignor {
    pub fn parse(name: &str) -> Option<Assignor> {
        match name {
            "" | "range" => Some(Assignor::Range),
            "uniform" => Some(Assignor::Uniform),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::Uniform => "uniform",
        }
    }

    /// The target assignment: `subscriptions` maps member id to its topics, `partitions` maps
    /// topic to its partition count (topics that do not exist are absent). Deterministic.
    pub fn assign(
        self,
        subscriptions: &BTreeMap<String, BTreeSet<String>>,
        partitions: &BTreeMap<String, u32>,
    ) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        let mut out: BTreeMap<String, BTreeSet<TopicPartition>> =
            subscriptions.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
        let subscribers = |topic: &str| -> Vec<&String> {
            subscriptions
                .iter()
                .filter(|(_, topics)| topics.contains(topic))
                .map(|(m, _)| m)
                .collect()
        };
        match self {
            Assignor::Range => {
                for (topic, &count) in partitions {
                    let members = subscribers(topic);
                    if members.is_empty() {
                        continue;
                    }
                    let per = count / members.len() as u32;
                    let extra = count % members.len() as u32;
                    let mut next = 0;
                    for (i, member) in members.into_iter().enumerate() {
                        let take = per + u32::from((i as u32) < extra);
                        let owned = out.get_mut(member).expect("member listed");
                        owned.extend((next..next + take).map(|p| (topic.clone(), p)));
                        next += take;
                    }
                }
            }
            Assignor::Uniform => {
                for (topic, &count) in partitions {
                    let members = subscribers(topic);
                    for p in 0..count {
                        // The eligible member with the fewest partitions so far, ties by id.
                        let Some(member) =
                            members.iter().min_by_key(|m| (out[m.as_str()].len(), m.as_str()))
                        else {
                            break;
                        };
                        out.get_mut(member.as_str())
                            .expect("member listed")
                            .insert((topic.clone(), p));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(entries: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        entries
            .iter()
            .map(|(m, t)| (m.to_string(), t.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn range_gives_contiguous_blocks() {
        let parts = BTreeMap::from([("a".to_owned(), 5)]);
        let out = Assignor::Range.assign(&subs(&[("m1", &["a"]), ("m2", &["a"])]), &parts);
        let m1: Vec<u32> = out["m1"].iter().map(|(_, p)| *p).collect();
        let m2: Vec<u32> = out["m2"].iter().map(|(_, p)| *p).collect();
        assert_eq!((m1, m2), (vec![0, 1, 2], vec![3, 4]));
    }

    #[test]
    fn uniform_balances_across_topics_and_skips_unsubscribed() {
        let parts = BTreeMap::from([("a".to_owned(), 3), ("b".to_owned(), 3), ("c".to_owned(), 2)]);
        let out =
            Assignor::Uniform.assign(&subs(&[("m1", &["a", "b"]), ("m2", &["a", "b"])]), &parts);
        assert_eq!(out["m1"].len(), 3);
        assert_eq!(out["m2"].len(), 3);
        assert!(out.values().flatten().all(|(t, _)| t != "c"));
        let all: BTreeSet<_> = out.values().flatten().cloned().collect();
        assert_eq!(all.len(), 6, "every partition exactly once");
    }
}
