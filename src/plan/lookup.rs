//! The resume lookups of [`Keep::Resume`](super::Keep::Resume): validation reads the input
//! while the output is scanned, and looks the rows up in the scan's table once it has it.
//! The rows validated before the scan ends wait in a buffer, which is bounded: past
//! [`MAX_WAITING`] rows validation waits for the scan, so memory stays within the table, the
//! duplicate check and that buffer, however far ahead validation is. Rows are looked up
//! [`CHUNK`] at a time, sorted by id key: the lookups then walk the table in order, which
//! takes half the time of lookups in input order (a cache miss per probe).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use super::{Plan, bit, clear_bit};
use crate::output::resume::{Previous, long_key, short_key};

/// Rows validated ahead of the scan, at most: 72 MiB of them, about what validation does
/// while the scan reads the records of 10,000,000 rows.
const MAX_WAITING: usize = 3 << 20;
/// Rows looked up together once the table is there.
const CHUNK: usize = 1 << 16;

/// A row waiting for its lookup: 24 bytes, with the id key as the table keeps it (see
/// [`short_key`]).
#[derive(Debug, Clone, Copy)]
struct Waiting {
    key: u64,
    hash: u64,
    top: u32,
    number: u32,
}

/// Looks validated rows up in the scan's table, once the scan sends it.
pub struct Resumer {
    scan: Receiver<Arc<Previous>>,
    prev: Option<Arc<Previous>>,
    /// The scan ended without a table (it failed: the caller reports why).
    gone: bool,
    /// Rows validated before the table came, or not yet looked up.
    waiting: Vec<Waiting>,
    rerun_changed: bool,
}

impl Resumer {
    /// Receives the scan's table from `scan`; with `rerun_changed`, changed rows are sent
    /// again.
    pub fn new(scan: Receiver<Arc<Previous>>, rerun_changed: bool) -> Resumer {
        Resumer {
            scan,
            prev: None,
            gone: false,
            waiting: Vec::new(),
            rerun_changed,
        }
    }

    /// A valid row: its id's key, its request's hash and its row number.
    pub(super) fn row(&mut self, plan: &mut Plan, key: u128, hash: u64, number: u64) {
        if self.gone {
            return;
        }
        let Ok(small) = u32::try_from(number) else {
            // Past 4,294,967,295 rows: the table first, then this row alone.
            if self.prev.is_none() {
                self.receive(plan, true);
            }
            if let Some(prev) = &self.prev {
                look_up(plan, prev, key, hash, number, self.rerun_changed);
            }
            return;
        };
        let (key, top) = short_key(key);
        self.waiting.push(Waiting {
            key,
            hash,
            top,
            number: small,
        });
        let n = self.waiting.len();
        match &self.prev {
            Some(_) if n >= CHUNK => self.look_up_waiting(plan),
            Some(_) => {}
            None if n.is_multiple_of(1024) => self.receive(plan, n >= MAX_WAITING),
            None => {}
        }
    }

    /// The end of the input: waits for the table, and looks up the rows still waiting.
    pub(super) fn finish(mut self, plan: &mut Plan) {
        if self.prev.is_none() && !self.gone {
            self.receive(plan, true);
        }
        self.look_up_waiting(plan);
    }

    /// Looks up the waiting rows, in the order of their keys.
    fn look_up_waiting(&mut self, plan: &mut Plan) {
        let Some(prev) = &self.prev else { return };
        self.waiting.sort_unstable_by_key(|w| w.key);
        for w in self.waiting.drain(..) {
            let number = u64::from(w.number);
            look_up(
                plan,
                prev,
                long_key((w.key, w.top)),
                w.hash,
                number,
                self.rerun_changed,
            );
        }
        if self.waiting.capacity() > CHUNK {
            self.waiting = Vec::with_capacity(CHUNK);
        }
    }

    /// Takes the table if the scan has sent it (waiting for it with `block`), and looks up
    /// the rows that waited for it.
    fn receive(&mut self, plan: &mut Plan, block: bool) {
        let prev = match block {
            true => self.scan.recv().map_err(|_| TryRecvError::Disconnected),
            false => self.scan.try_recv(),
        };
        match prev {
            Ok(prev) => {
                self.prev = Some(prev);
                self.look_up_waiting(plan);
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => {
                self.gone = true;
                self.waiting = Vec::new();
            }
        }
    }
}

/// Counts a row by its id's latest record (see [`Plan::count`]).
fn look_up(plan: &mut Plan, prev: &Previous, key: u128, hash: u64, number: u64, rerun: bool) {
    plan.count(prev.status_by_key(key, hash), number, rerun);
}

impl Plan {
    /// A row [`Plan::count`] counted turned out invalid (a later row of a duplicate id, or a
    /// row without an id): it is neither done nor changed, but gets its `invalid_input` record.
    pub(super) fn uncount(&mut self, number: u64) {
        let counted = [
            (&mut self.done_bits, &mut self.rows_done),
            (&mut self.changed_bits, &mut self.rows_changed),
        ];
        for (bits, rows) in counted {
            if bit(bits, number) {
                *rows -= 1;
                clear_bit(bits, number);
                clear_bit(&mut self.skip_rows, number);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::input::ids::id_key;

    fn previous(text: &str) -> Arc<Previous> {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        f.write_all(text.as_bytes()).expect("write");
        Arc::new(crate::output::resume::scan(f.path(), false).expect("scan"))
    }

    const DONE: &str = "{\"id\":\"a\",\"status\":\"ok\",\"request_hash\":\"0000000000000001\"}\n\
                        {\"id\":\"b\",\"status\":\"ok\",\"request_hash\":\"0000000000000002\"}\n\
                        {\"id\":\"c\",\"status\":\"error\"}\n";

    #[test]
    fn rows_validated_before_the_table_comes_are_looked_up_when_it_does() {
        let (send, receive) = std::sync::mpsc::sync_channel(1);
        let mut r = Resumer::new(receive, false);
        let mut plan = Plan::default();
        r.row(&mut plan, id_key("a"), 1, 1);
        r.row(&mut plan, id_key("b"), 9, 2);
        assert_eq!(r.waiting.len(), 2);
        send.send(previous(DONE)).expect("send");
        r.row(&mut plan, id_key("c"), 3, 3);
        r.row(&mut plan, id_key("d"), 4, 4);
        r.finish(&mut plan);
        assert_eq!((plan.rows_done, plan.rows_changed), (1, 1));
        let skipped: Vec<u64> = (1..=4).filter(|&n| bit(&plan.skip_rows, n)).collect();
        assert_eq!(skipped, [1, 2]);
    }

    #[test]
    fn the_end_of_the_input_waits_for_the_table_and_a_failed_scan_stops_the_lookups() {
        let (send, receive) = std::sync::mpsc::sync_channel(1);
        let mut r = Resumer::new(receive, true);
        let mut plan = Plan::default();
        r.row(&mut plan, id_key("b"), 9, 1);
        let scan = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            send.send(previous(DONE)).expect("send");
        });
        r.finish(&mut plan);
        scan.join().expect("scan thread");
        // --rerun-changed: counted as changed, not skipped.
        assert_eq!((plan.rows_done, plan.rows_changed), (0, 1));
        assert!(!bit(&plan.skip_rows, 1));

        let (send, receive) = std::sync::mpsc::sync_channel::<Arc<Previous>>(1);
        let mut r = Resumer::new(receive, false);
        let mut plan = Plan::default();
        r.row(&mut plan, id_key("a"), 1, 1);
        drop(send);
        r.row(&mut plan, id_key("a"), 1, 2);
        r.finish(&mut plan);
        assert_eq!(plan.rows_done, 0);
        assert!(plan.skip_rows.iter().all(|&w| w == 0));
    }
}
