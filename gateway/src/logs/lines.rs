//! [`LineWriter`]: lines written off the proxy's workers. The audit and the access log both go
//! through one: a request only queues its line (never waits on a disk or a pipe), a thread
//! writes them, and when the thread falls behind the queue's bound, lines are dropped and
//! counted (`gateway_log_lines_dropped_total{log}`), never queued without limit.

use std::io::Write;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use prometheus::IntCounter;

use crate::config::LineSink;

/// How many lines may wait for the writer thread.
const QUEUE: usize = 8192;

pub struct LineWriter {
    queue: SyncSender<String>,
    dropped: IntCounter,
    name: &'static str,
}

impl LineWriter {
    /// Starts the writer thread for `sink` (start-up only); `None` for [`LineSink::Off`].
    pub fn start(
        name: &'static str,
        sink: &LineSink,
        dropped: IntCounter,
    ) -> std::io::Result<Option<LineWriter>> {
        let out: Box<dyn Write + Send> = match sink {
            LineSink::Off => return Ok(None),
            LineSink::Stdout => Box::new(std::io::stdout()),
            LineSink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        LineWriter::over(name, out, dropped).map(Some)
    }

    /// A writer thread over `out`.
    fn over(
        name: &'static str,
        mut out: Box<dyn Write + Send>,
        dropped: IntCounter,
    ) -> std::io::Result<LineWriter> {
        let (queue, lines) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name(format!("{name}-writer"))
            .spawn(move || {
                for line in lines {
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            })?;
        Ok(LineWriter {
            queue,
            dropped,
            name,
        })
    }

    /// Queues one line; drops it (and counts it) if the writer is behind.
    pub fn write(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.queue.try_send(line) {
            self.dropped.inc();
            let n = self.dropped.get();
            if n.is_power_of_two() {
                log::warn!("{} log is behind; {n} lines dropped so far", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.log");
        let dropped = IntCounter::new("d", "d").unwrap();
        let writer = LineWriter::start("test", &LineSink::File(path.clone()), dropped.clone())
            .unwrap()
            .unwrap();
        for i in 0..100 {
            writer.write(format!("line {i}"));
        }
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&path).unwrap_or_default() != expected {
            assert!(std::time::Instant::now() < deadline, "lines never arrived");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(dropped.get(), 0);
    }

    /// A sink stuck until its gate opens, like a full pipe nobody reads.
    struct Stuck(std::sync::Arc<std::sync::Mutex<()>>);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            drop(self.0.lock());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_sink_costs_dropped_lines_never_a_blocked_caller() {
        let gate = std::sync::Arc::new(std::sync::Mutex::new(()));
        let closed = gate.lock().unwrap();
        let dropped = IntCounter::new("d", "d").unwrap();
        let writer =
            LineWriter::over("test", Box::new(Stuck(gate.clone())), dropped.clone()).unwrap();
        // The queue holds QUEUE lines and the thread at most one more, stuck in `write`.
        for i in 0..QUEUE + 10 {
            writer.write(format!("line {i}"));
        }
        let lost = dropped.get();
        assert!((9..=10).contains(&lost), "{lost} dropped");
        drop(closed);
    }

    #[test]
    fn off_starts_nothing() {
        let dropped = IntCounter::new("d", "d").unwrap();
        assert!(LineWriter::start("test", &LineSink::Off, dropped)
            .unwrap()
            .is_none());
    }
}
