//! The connection caps: whom a connection counts against ([`Client`]: an
//! IPv4 address, an IPv6 /64, a local uid), the counts of the connections
//! open now ([`Connections`]), and the [`Slot`] a connection holds while it
//! runs, taken only under the caps and given back however its thread
//! ends. The rules are in the parent module's documentation.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use super::ServerLimits;
use crate::listen::Socket;

impl ServerLimits {
    /// The most connections `client` may hold at once: `max_per_client`,
    /// and for a local user other than root also a quarter of
    /// `max_local_connections` (at least one), so that one user cannot
    /// take every local slot from the others.
    pub(super) fn per_client_cap(&self, client: Client) -> usize {
        match client {
            Client::Uid(0) => self.max_per_client,
            Client::Uid(_) => self
                .max_per_client
                .min((self.max_local_connections / 4).max(1)),
            _ => self.max_per_client,
        }
    }
}

/// Whom the per-client cap counts: an IPv4 address, an IPv6 /64, or a
/// local user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Client {
    V4(Ipv4Addr),
    /// The first 64 bits of the address.
    V6Net(u64),
    Uid(u32),
    /// A uid on `postie lmtp`'s socket: counted as a TCP client is.
    LmtpUid(u32),
}

/// The key under which the per-client cap counts a TCP client at `ip`.
/// An IPv6 host is handed a whole /64 (RFC 4291 2.5.1: interface ids are
/// 64 bits; SLAAC and privacy addresses, RFC 8981, pick any of them), so
/// counting addresses would let one host take every slot; a v4-mapped
/// address (a dual-stack socket's view of an IPv4 client) is that IPv4
/// address.
pub(super) fn client_of(ip: IpAddr) -> Client {
    match ip.to_canonical() {
        IpAddr::V4(v4) => Client::V4(v4),
        IpAddr::V6(v6) => Client::V6Net((v6.to_bits() >> 64) as u64),
    }
}

#[derive(Default)]
pub(super) struct Connections {
    /// Every connection, local ones included.
    pub(super) total: usize,
    /// Connections on the submission socket.
    local: usize,
    per_client: HashMap<Client, usize>,
    /// Every connection's socket, shut at the end of the shutdown grace.
    pub(super) streams: HashMap<u64, Arc<dyn Socket>>,
    next: u64,
}

/// One counted connection; removes itself from the counts when its thread
/// ends, however it ends.
pub(super) struct Slot {
    conns: Arc<Mutex<Connections>>,
    client: Client,
    key: u64,
}

impl Slot {
    /// Counts a new connection from `client`, or says no when a cap is
    /// reached.
    pub(super) fn take(
        conns: &Arc<Mutex<Connections>>,
        client: Client,
        stream: Arc<dyn Socket>,
        limits: &ServerLimits,
    ) -> Option<Slot> {
        let mut c = lock(conns);
        let per = c.per_client.get(&client).copied().unwrap_or(0);
        let full = match client {
            // Root's submissions (cron, the system's daemons) are not
            // refused for the total: one user's idle connections filling
            // the local slots would otherwise stop the system's mail.
            Client::Uid(0) => false,
            Client::Uid(_) => c.local >= limits.max_local_connections,
            _ => c.total - c.local >= limits.max_connections,
        };
        if full || per >= limits.per_client_cap(client) {
            return None;
        }
        c.total += 1;
        if let Client::Uid(_) = client {
            c.local += 1;
        }
        *c.per_client.entry(client).or_insert(0) += 1;
        c.next += 1;
        let key = c.next;
        c.streams.insert(key, stream);
        Some(Slot {
            conns: conns.clone(),
            client,
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = lock(&self.conns);
        c.total -= 1;
        if let Client::Uid(_) = self.client {
            c.local -= 1;
        }
        if let Some(n) = c.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.client);
            }
        }
        c.streams.remove(&self.key);
    }
}

pub(super) fn lock(m: &Mutex<Connections>) -> MutexGuard<'_, Connections> {
    // A panicking connection thread cannot leave the counts half-updated
    // (every update is a few integer operations), so a poisoned lock is
    // still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A non-root local user gets a quarter of the local slots (at least
    /// one), never more than `max_per_client`; root and TCP clients get
    /// `max_per_client`.
    #[test]
    fn a_local_user_gets_a_share_of_the_local_slots() {
        let limits = |local, per| ServerLimits {
            max_connections: 100,
            max_local_connections: local,
            max_per_client: per,
            shutdown_grace: Duration::from_secs(1),
            finish_within: Duration::from_secs(1),
            thread_stack: 1 << 16,
        };
        let user = Client::Uid(1000);
        let tcp = Client::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(limits(50, 50).per_client_cap(user), 12);
        assert_eq!(limits(50, 5).per_client_cap(user), 5);
        assert_eq!(limits(3, 50).per_client_cap(user), 1);
        assert_eq!(limits(1, 50).per_client_cap(user), 1);
        assert_eq!(limits(50, 50).per_client_cap(Client::Uid(0)), 50);
        assert_eq!(limits(50, 50).per_client_cap(tcp), 50);
    }

    #[test]
    fn ipv6_clients_count_per_64_and_v4_mapped_as_ipv4() {
        let key = |s: &str| client_of(s.parse().unwrap());
        // One /64 is one client: a host there has 2^64 addresses.
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:a:b:c:d"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db9:1:2::1"));
        // IPv4, and IPv4 seen through a dual-stack socket, per address.
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_ne!(key("::ffff:192.0.2.1"), key("::ffff:192.0.2.2"));
        // A v4-mapped address is not lumped with the rest of ::ffff:0:0/96.
        assert_ne!(key("::ffff:192.0.2.1"), key("::ffff:198.51.100.7"));
        // Loopback stays itself.
        assert_ne!(key("::1"), key("127.0.0.1"));
    }
}
