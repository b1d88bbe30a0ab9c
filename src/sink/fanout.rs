//! Several downstreams at once (`--downstream` repeated): every batch goes to each, in order,
//! on the sink thread. Each keeps what makes it independent: its own encoder, queue, retries,
//! spill directory and telemetry (`downstream:<name>`), so an HTTP downstream that is slow or
//! down only fills its own queue and spill. A downstream's write error is counted against it
//! alone (its `/status` entry, and the points lost at stop) and never keeps a batch from the
//! others.
//!
//! When one downstream needs windows whole (relay, prometheus-scrape) the owners keep them
//! whole, and the others get the batch expanded here as the owners would have expanded it
//! (`merge::expand_whole`), once per batch. Owns its children; must not reach into shards.

use std::io;

use super::Sink;
use crate::flushed::{FlushBatch, View};
use crate::merge::{HistogramOutput, expand_whole};
use crate::telemetry::board::DownstreamStatus;

/// One downstream behind the fan-out.
pub struct Child {
    pub name: String,
    pub sink: Box<dyn Sink>,
    /// Takes batches whole (sets' members, histograms' samples), as the owners make them.
    pub wants_whole: bool,
    written: u64,
    failed: u64,
    last_error: Option<String>,
}

impl Child {
    pub fn new(name: String, sink: Box<dyn Sink>, wants_whole: bool) -> Child {
        Child {
            name,
            sink,
            wants_whole,
            written: 0,
            failed: 0,
            last_error: None,
        }
    }

    fn write(&mut self, batch: View<'_>) {
        match self.sink.write(batch).and_then(|()| self.sink.flush()) {
            Ok(()) => self.written += batch.metrics.len() as u64,
            Err(e) => {
                if self.failed == 0 {
                    eprintln!("corestatsd: {}: write failed: {e}", self.name);
                }
                self.failed += batch.metrics.len() as u64;
                self.last_error = Some(e.to_string());
            }
        }
    }
}

pub struct FanoutSink {
    children: Vec<Child>,
    histogram: HistogramOutput,
}

impl FanoutSink {
    pub fn new(children: Vec<Child>, histogram: HistogramOutput) -> FanoutSink {
        FanoutSink {
            children,
            histogram,
        }
    }
}

impl Sink for FanoutSink {
    fn write(&mut self, batch: View<'_>) -> io::Result<()> {
        let needs_expanding = batch.whole && self.children.iter().any(|c| !c.wants_whole);
        let expanded = needs_expanding.then(|| expand_whole(batch.batch, &self.histogram));
        for c in &mut self.children {
            match &expanded {
                Some(e) if !c.wants_whole => c.write(batch.over(e)),
                _ => c.write(batch.over(batch.batch)),
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn emit_telemetry(&mut self, out: &mut FlushBatch, window: u64) {
        for c in &mut self.children {
            c.sink.emit_telemetry(out, window);
        }
    }

    fn statuses(&self, base: DownstreamStatus) -> Vec<DownstreamStatus> {
        self.children
            .iter()
            .map(|c| {
                let mut s = DownstreamStatus {
                    name: c.name.clone(),
                    written_points: c.written,
                    failed_points: c.failed,
                    last_error: c.last_error.clone(),
                    ..base.clone()
                };
                c.sink.status(&mut s);
                s
            })
            .collect()
    }

    fn close(&mut self) -> io::Result<u64> {
        let mut lost = 0;
        for c in &mut self.children {
            match c.sink.close() {
                Ok(n) => lost += n + c.failed,
                Err(e) => {
                    eprintln!("corestatsd: {}: close failed: {e}", c.name);
                    lost += c.failed;
                }
            }
        }
        Ok(lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flushed::{Contexts, DescRef, FlushedMetric, Suffix, desc};
    use crate::protocol::MetricType;
    use crate::values::{Agg, histogram::Histogram};
    use std::sync::{Arc, Mutex};

    /// Records the suffixes of what it is given; fails every write when `broken`.
    struct Probe {
        seen: Arc<Mutex<Vec<(Suffix, bool)>>>,
        broken: bool,
    }

    impl Sink for Probe {
        fn write(&mut self, batch: View<'_>) -> io::Result<()> {
            if self.broken {
                return Err(io::Error::other("down"));
            }
            let mut seen = self.seen.lock().unwrap();
            seen.extend(batch.metrics.iter().map(|m| (m.suffix, m.whole.is_some())));
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_downstream_gets_every_batch_in_its_form_and_a_broken_one_only_its_own_loss() {
        let mut arena = Vec::new();
        let offset = desc::encode(
            &mut arena,
            MetricType::Histogram,
            b"h",
            None,
            None,
            [].into_iter(),
        );
        let whole = FlushBatch {
            arenas: vec![arena],
            metrics: vec![FlushedMetric {
                desc: DescRef::Arena { arena: 0, offset },
                whole: Some(Box::new(Agg::Histogram(Box::new(Histogram::Exact(vec![
                    (1.0, 1.0),
                    (3.0, 1.0),
                ]))))),
                ..Default::default()
            }],
            whole: true,
            ..Default::default()
        };
        let probe = |broken| {
            let seen = Arc::new(Mutex::new(Vec::new()));
            (
                seen.clone(),
                Box::new(Probe { seen, broken }) as Box<dyn Sink>,
            )
        };
        let (relay_seen, relay) = probe(false);
        let (jsonl_seen, jsonl) = probe(false);
        let (_, broken) = probe(true);
        let output = HistogramOutput {
            aggregates: vec![Suffix::Max, Suffix::Count],
            percentiles: vec![(95, 0.95)],
        };
        let mut f = FanoutSink::new(
            vec![
                Child::new("relay".into(), relay, true),
                Child::new("broken".into(), broken, false),
                Child::new("jsonl".into(), jsonl, false),
            ],
            output,
        );
        let contexts = Contexts::default();
        f.write(View::new(&whole, &contexts)).unwrap();
        assert_eq!(*relay_seen.lock().unwrap(), [(Suffix::None, true)]);
        assert_eq!(
            *jsonl_seen.lock().unwrap(),
            [
                (Suffix::Max, false),
                (Suffix::Count, false),
                (Suffix::Percentile(95), false)
            ]
        );
        let s = f.statuses(DownstreamStatus::default());
        let by_name: Vec<(&str, u64, u64)> = s
            .iter()
            .map(|s| (s.name.as_str(), s.written_points, s.failed_points))
            .collect();
        assert_eq!(
            by_name,
            [("relay", 1, 0), ("broken", 0, 3), ("jsonl", 3, 0)]
        );
        assert_eq!(s[1].last_error.as_deref(), Some("down"));
        assert_eq!(f.close().unwrap(), 3);
    }
}
