//! The open connections and their limits: at most `max_connections` in
//! all and `max_connections_per_peer` from one address. A new connection
//! over a limit takes the place of the longest-idle connection (one with no
//! request in progress) of the same peer or, for the overall limit, of
//! anyone; when every connection is busy, the new one is closed at once.
//! Idle connections that never send a request therefore cannot starve the
//! clients that do, health checks included.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once, in all.
    pub max: usize,
    /// Connections open at once from one address.
    pub per_peer: usize,
}

struct Conn {
    peer: IpAddr,
    last_active: Instant,
    busy: usize,
    evict: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    next: u64,
    open: HashMap<u64, Conn>,
    per_peer: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Conn> {
        let conn = self.open.remove(&id)?;
        if let Some(n) = self.per_peer.get_mut(&conn.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&conn.peer);
            }
        }
        Some(conn)
    }

    /// The longest-idle connection without a request in progress, of
    /// `peer` when given.
    fn idlest(&self, peer: Option<IpAddr>) -> Option<u64> {
        self.open
            .iter()
            .filter(|(_, c)| c.busy == 0 && peer.is_none_or(|p| c.peer == p))
            .min_by_key(|(_, c)| c.last_active)
            .map(|(id, _)| *id)
    }
}

/// The table of open connections; cheap to clone.
#[derive(Clone)]
pub struct Connections {
    limits: Limits,
    table: Arc<Mutex<Table>>,
}

/// One admitted connection: mark its requests, and hear when it is evicted.
/// Dropping it removes it from the table.
pub struct Admitted {
    id: u64,
    table: Arc<Mutex<Table>>,
    /// Notified when a newer connection took this one's place.
    pub evicted: Arc<Notify>,
}

impl Connections {
    /// An empty table with these limits.
    pub fn new(limits: Limits) -> Self {
        Connections {
            limits,
            table: Arc::default(),
        }
    }

    /// Admit a connection from `peer`, evicting an idle one if a limit is
    /// reached; `None` when every connection in the way is busy.
    pub fn admit(&self, peer: IpAddr) -> Option<Admitted> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if t.per_peer.get(&peer).copied().unwrap_or(0) >= self.limits.per_peer {
            let victim = t.idlest(Some(peer))?;
            evict(&mut t, victim);
        }
        if t.open.len() >= self.limits.max {
            let victim = t.idlest(None)?;
            evict(&mut t, victim);
        }
        t.next += 1;
        let id = t.next;
        let evicted = Arc::new(Notify::new());
        t.open.insert(
            id,
            Conn {
                peer,
                last_active: Instant::now(),
                busy: 0,
                evict: evicted.clone(),
            },
        );
        *t.per_peer.entry(peer).or_default() += 1;
        Some(Admitted {
            id,
            table: self.table.clone(),
            evicted,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .len()
    }
}

fn evict(t: &mut Table, id: u64) {
    if let Some(conn) = t.remove(id) {
        tracing::debug!(peer = %conn.peer, "closing an idle connection to make room for a new one");
        conn.evict.notify_one();
    }
}

/// A request in progress on a connection; the connection is busy (not
/// evicted) until it is dropped.
pub struct InProgress {
    id: u64,
    table: Arc<Mutex<Table>>,
}

impl Admitted {
    /// Mark a request in progress.
    pub fn request(&self) -> InProgress {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = t.open.get_mut(&self.id) {
            c.busy += 1;
            c.last_active = Instant::now();
        }
        InProgress {
            id: self.id,
            table: self.table.clone(),
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = t.open.get_mut(&self.id) {
            c.busy = c.busy.saturating_sub(1);
            c.last_active = Instant::now();
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    async fn was_evicted(a: &Admitted) -> bool {
        tokio::time::timeout(std::time::Duration::ZERO, a.evicted.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_full_table_makes_room_by_closing_the_idlest_idle_connection() {
        let conns = Connections::new(Limits {
            max: 3,
            per_peer: 2,
        });
        let a1 = conns.admit(ip(1)).unwrap();
        let a2 = conns.admit(ip(1)).unwrap();
        let _busy = a1.request();
        // Peer 1 is at its limit: its idle connection (a2) goes, not the busy one.
        let a3 = conns.admit(ip(1)).unwrap();
        assert_eq!(conns.open(), 2);
        assert!(was_evicted(&a2).await && !was_evicted(&a1).await);
        drop(a2);
        let b1 = conns.admit(ip(2)).unwrap();
        assert_eq!(conns.open(), 3);
        // Full overall: the idlest idle connection of anyone (a3) goes.
        let _c1 = conns.admit(ip(3)).unwrap();
        assert_eq!(conns.open(), 3);
        assert!(was_evicted(&a3).await && !was_evicted(&b1).await);
        drop(a3);
        // Everyone busy: a new connection is refused.
        let _b = b1.request();
        let _c = _c1.request();
        assert!(conns.admit(ip(4)).is_none());
        drop(_b);
        assert!(conns.admit(ip(4)).is_some());
    }
}
