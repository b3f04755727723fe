"""Every protocol timing constant of ipop, unit in the name, with one line of why (DESIGN.md §12.7).

Cores read these as defaults; tests shrink them through the cores' config objects, never by
patching this module. What stays next to its code: sizes and counts that are not times, the
adapters' own housekeeping (how often the daemon drains its log journal, polls or writes
files, ipop.aio.daemon and ipop.aio.peerstore), the control socket's and CLI's reply
timeouts, and tools' and tests' waits.
"""

from __future__ import annotations

# --- sessions (ipop/link/layer.py) ----------------------------------------------------------------
# Start a new handshake this long after a session was keyed: short enough that one key never
# protects much traffic, long enough that handshakes stay a rounding error (WireGuard: 120 s).
REKEY_AFTER_S = 120.0
# A session older than this refuses to send or receive: the hard cap behind REKEY_AFTER_S.
REJECT_AFTER_S = 180.0
# Rekey after this many packets sent with one key; far below the 2**64 nonce space and the
# AES-GCM guidance of 2**32 messages per key.
REKEY_AFTER_MESSAGES = 1 << 30
REJECT_AFTER_MESSAGES = (1 << 31) - 1
# Retransmit an unanswered handshake initiation after this long (doubling, with a cap). Half a
# second, not TCP's one: a node started a moment before its bootstrap (or whose first datagram
# was lost) links on the first retry, 0.5 s later; the doubling keeps a dead endpoint at six
# tries in HANDSHAKE_TIMEOUT_S instead of five.
HANDSHAKE_RETRY_S = 0.5
HANDSHAKE_RETRY_MAX_S = 8.0
# Give up on a handshake that got no answer for this long.
HANDSHAKE_TIMEOUT_S = 20.0
# Handshake timestamps may differ from our clock by this much (clock skew between hosts).
HANDSHAKE_CLOCK_SKEW_S = 120.0
# After a rekey, the previous keys still open packets for this long (packets in flight).
PREVIOUS_KEY_GRACE_S = 10.0
# Replay window width in packets: reordering deeper than this is dropped (RFC 6479 uses 2048).
REPLAY_WINDOW = 2048
# A session that authenticated nothing for this long is down: three missed keepalives
# (3 x KEEPALIVE_INTERVAL_S below) plus 5 s for one round trip of slack.
LINK_TIMEOUT_S = 50.0
# We sent and heard nothing back for this long: re-handshake (a peer that lost our session,
# e.g. after it restarted or closed the link, would otherwise blackhole traffic until
# LINK_TIMEOUT_S). Above KEEPALIVE_INTERVAL_S, the longest a live peer stays quiet.
SILENT_PEER_S = 20.0
# How long a peer that routed around our session with it has to show that it still holds
# that session (see LinkLayer.peer_unlinked): several round trips, and two Init copies.
UNLINKED_CHECK_S = 3.0
# Keys we answered for a peer's other Inits when one of them was confirmed ("spare", see
# Handshakes._confirm) open its DATA this long after: the initiator installs every Resp that
# reaches it, in arrival order, so the last one it installed (and seals with) may be confirmed
# after another; a few round trips of the slowest path a handshake completes on.
SPARE_KEYS_S = 3.0

# --- handshake flood guard (ipop/link/cookie.py) --------------------------------------------------
# Above this many Inits per second a responder is "under load" and answers an Init without a
# valid cookie with a 37-byte cookie reply only: a verified Init costs ~0.3 ms, so this keeps
# cookie-less verification under ~6 % of a core, far above any honest rate (a bootstrap node
# seeing a 200-node network join at once takes one cookie round trip more, nothing worse).
INIT_LOAD_PER_S = 200
# Verified Inits per second, whatever the cookies (a botnet holding cookies for many real
# addresses): the hard bound on handshake CPU, ~0.5 core at ~0.3 ms each.
INIT_VERIFY_MAX_PER_S = 1500
# Per source address, Inits per second that may reach verification (and the burst): one
# address holds a few nodes behind one NAT, each starting a handshake now and then.
INIT_SOURCE_RATE_PER_S = 8.0
INIT_SOURCE_BURST = 16.0
# Source addresses whose token buckets we keep (oldest forgotten first: a forgotten source
# only starts over with a full bucket, so churn by spoofed sources costs honest ones nothing).
INIT_SOURCE_TABLE_MAX = 4096
# The cookie secret changes this often; a cookie made with the current or the previous one
# is accepted, so a cookie stays good 120-240 s (WireGuard's COOKIE_REFRESH_TIME).
COOKIE_SECRET_ROTATE_S = 120.0

# --- STUN (ipop/nat/stun.py) ----------------------------------------------------------------------
# Client transactions: first retransmission after STUN_RTO_S (doubling), given up after
# STUN_TIMEOUT_S. RFC 5389 §7.2.1 starts at 500 ms for the internet; netcheck waits for answers
# that may never come (filtering tests), so it uses shorter defaults and a bounded total.
STUN_RTO_S = 0.2
STUN_TIMEOUT_S = 1.5
# A node configured to serve STUN answers each source address this often (and burst): netcheck
# sends a handful of requests per run, with retransmissions.
STUN_SOURCE_RATE_PER_S = 5.0
STUN_SOURCE_BURST = 20.0
# ... and everybody together this often: a reflector that answers at most this much cannot be
# made into a useful flood, and answers are never larger than the requests.
STUN_GLOBAL_RATE_PER_S = 500.0
STUN_GLOBAL_BURST = 1000.0
# Source addresses whose STUN buckets we keep (oldest forgotten first).
STUN_SOURCE_TABLE_MAX = 4096

# --- keepalives (ipop/link/layer.py) --------------------------------------------------------------
# Keepalive interval: under the ~30 s UDP mapping timeout of common NATs (RFC 4787 REQ-5
# asks for >= 2 min, many do less), with slack for one lost keepalive.
KEEPALIVE_INTERVAL_S = 15.0

# --- certificate revocation gossip (ipop/revocation.py) -------------------------------------------
# One CRL pushed to a peer this often at most: a peer that keeps offering an older number
# gets ours again only after this, so an insider cannot make us stream CRLs.
CRL_PUSH_INTERVAL_S = 10.0
# A CRL whose chunks have not all arrived this long after the first is discarded: bounds the
# assembly state one peer can hold open.
CRL_ASSEMBLY_TIMEOUT_S = 30.0
# A peer whose CRL failed verification is ignored this long: one bad list costs one
# verification per interval, not one per offer.
CRL_VERIFY_BACKOFF_S = 30.0
# We ask one peer for its newer list at most this often.
CRL_PULL_WAIT_S = 10.0

# --- identity and certificates (ipop/identity/, tools/config_cli.py) ----------------------------
# Certificates start this long before the moment they are signed, so a node whose clock runs
# a little behind the machine that ran ipop-config can use a freshly made bundle at once.
CERT_BACKDATE_S = 3600.0
# Default lifetimes of a network CA and of a node certificate.
CA_DEFAULT_DAYS = 3650
NODE_CERT_DEFAULT_DAYS = 365

# --- DHT (ipop/dht; joining: ipop/aio/stack.py; vIP claims: ipop/aio/daemon.py) -------------------
# Retransmit an unanswered DHT RPC (same message id) after this long: a few overlay round
# trips, so one lost datagram costs hundreds of ms instead of kademlia's 5 s stall.
DHT_RPC_RETRY_S = 0.4
# The retransmission timeout adapts to the round trips measured to each peer (srtt + 4 rttvar,
# as TCP's RFC 6298), never below this floor (a busy daemon's scheduling delay) nor above
# DHT_RPC_RETRY_S. Why: with a fixed 0.4 s every silent replica or lookup target (a paused or
# killed node) cost 1.6 s per round although answers take ~20 ms, and a restarted daemon's
# claims took 10-26 s in a 30-daemon soak.
DHT_RPC_MIN_RETRY_S = 0.1
# A peer that left every try of an RPC unanswered gets one try per RPC for this long, until
# anything arrives from it: one dead or paused node costs each later lookup one timeout, not
# DHT_RPC_ATTEMPTS of them. One that left a single try unanswered is not waited for by reads
# (DhtService.get) for as long, again until anything arrives from it.
DHT_SILENT_PEER_S = 30.0
# Tries per RPC before the peer counts as gone: at 5% loss each way one try fails 9.75% of the
# time, four fail 1e-4 of the time, so a lossy path does not evict a live contact.
DHT_RPC_ATTEMPTS = 4
# A replica replays its cached answer to a retransmitted request for this long (at-most-once
# execution); longer than DHT_RPC_RETRY_S * DHT_RPC_ATTEMPTS plus in-flight time.
DHT_RESPONSE_CACHE_S = 5.0
# Owners push their live records to the current R nearest this often: bounds how long a record
# stays under-replicated after replicas leave (a leaving node's records are gone at once).
DHT_REPUBLISH_INTERVAL_S = 60.0
# Look up our own id and one random id this often, so routing tables track joins and leaves.
DHT_REFRESH_INTERVAL_S = 120.0
# Replicas refuse leases longer than this: an abandoned record dies within a day at worst.
DHT_MAX_TTL_S = 86400.0
# Base of the jittered, doubling pause between create rounds after a split vote (two racers
# that both fell short of a quorum withdraw, and the pause makes one of them go first).
DHT_CREATE_BACKOFF_S = 0.3
# Create rounds before giving up when votes keep splitting or replicas keep timing out.
DHT_CREATE_ROUNDS = 6
# Lease of a virtual IP or hostname record: short enough that a dead node's address frees up
# within minutes, long enough that renewals are rare DHT traffic.
DHT_LEASE_TTL_S = 600.0
# Renew a lease when this fraction of its TTL has passed (DHCP's T1 is 0.5), leaving time
# for several retries before it lapses.
DHT_LEASE_RENEW_FRACTION = 0.5
# How long a stopping daemon waits for its services' withdrawals (tombstones: quorum writes)
# before it leaves them to lapse with their leases.
SERVICE_WITHDRAW_S = 3.0
# How often a config's [[service]] tables are checked against their addresses (a router's LAN
# hosts'; a node's own vIP) and ones that failed to publish are retried.
LAN_SERVICE_SYNC_S = 1.0
# After a failed renewal, try again this soon (the lease still has half its life left).
DHT_LEASE_RETRY_S = 10.0
# Between DHT join attempts while the first ones find nobody to answer (ipop/aio/stack.py).
DHT_JOIN_RETRY_S = 2.0
# The DHT waits this long for the overlay's JOIN answer before joining through the links it
# has. Why: a JOIN routed into a paused node (SIGSTOP) is lost until the silent-neighbour timer
# closes that node (10-16 s), and a restarted daemon's links (its bootstrap, its remembered
# peers re-keyed at start) already reach the DHT; the DHT join itself checks that a peer
# answers.
DHT_JOIN_WAIT_S = 1.0
# The overlay's linked peers are taken in as contacts this often at most (ipop/dht/lookup.py):
# links come and go in bursts while the ring forms, and each absorb walks every link.
DHT_LINK_ABSORB_S = 5.0
# After a lost create's withdrawal its tombstone is sent to the replicas again this much later:
# a replica that took the rival's claim in the meantime hears the withdrawal too.
DHT_WITHDRAW_AGAIN_S = 2.0
# Between attempts to win a virtual IP in the DHT when one failed (ipop/aio/daemon.py): the
# create has retried inside already, so this only paces whole attempts.
VIP_ALLOC_RETRY_S = 2.0
# Linked peers' vIPs are learned from their hostnames (Daemon.learn_peer_vips) this often,
# and an answer holds this long: a lease moves rarely, and each sweep costs DHT lookups.
PEER_VIP_SWEEP_S = 30.0
# The first sweep waits this long after the node is ready: a network's first seconds are its
# busiest, and a display column must not compete with claims and names for them (a cold start
# of 32 daemons spent ~16 lookups per node here, most of them for names not yet registered).
PEER_VIP_FIRST_S = 10.0
PEER_VIP_TTL_S = 300.0

# --- virtual IP owners (ipop/vnet/owners.py, ipop/aio/dataplane.py) -------------------------------
# How long a vIP -> node answer is trusted before it is looked up again: a lease moves rarely,
# and a stale answer only costs packets until the new holder's first packet (spoofed_inner_src).
OWNER_TTL_S = 120.0
# How long "nobody holds it" is trusted: short, so a node that just claimed it is reached soon.
OWNER_NEGATIVE_TTL_S = 3.0
# A DHT lookup that has not answered by then is abandoned, so that its slot in the table's
# in-flight cap comes back (the DHT's own timeouts are shorter; this is the backstop).
OWNER_LOOKUP_TIMEOUT_S = 30.0

# --- data path (ipop/aio/dataplane.py) ------------------------------------------------------------
# A wake-up this long after the previous one of the same fd reads one packet only: an isolated
# packet (a ping, a request) then leaves without the extra read that would find the fd empty.
# A burst pays one extra loop pass before the next wake-up, close behind, reads full batches.
DATAPLANE_SPARSE_S = 1e-3
# The lane's routes are checked and what it did counted after every batch, and this often
# besides (while it sends, no batch may reach Python): the link's view of the traffic it sent
# (keepalives, rekeys by count, idle shortcuts, path checks) lags by at most this much.
LANE_SYNC_S = 0.1

# --- overlay (ipop/overlay) -----------------------------------------------------------------------
# Maintenance tick: policies (near, far, trim) and deadlines are checked this often; a second
# keeps repair prompt and costs microseconds per node.
OVERLAY_TICK_S = 1.0
# Near neighbours swap neighbour lists this often (and at once when the near set changes):
# ring stabilisation converges in a few rounds, so a lost list costs at most this long.
OVERLAY_GOSSIP_INTERVAL_S = 5.0
# A node short of near links (joining, or after losing neighbours) re-probes its own address
# this often: a JOIN lost on a half-built ring must not leave the node outside for long.
OVERLAY_NEAR_RETRY_S = 5.0
# A node with a full near set still probes its own address this often: catches ring splits
# that gossip between already-linked neighbours can never see.
OVERLAY_NEAR_PROBE_S = 60.0
# A near peer we heard nothing from (no overlay message: its gossip reaches us every
# OVERLAY_GOSSIP_INTERVAL_S +20%) for this long is pulled for its neighbour list every tick...
OVERLAY_NEAR_SUSPECT_S = 7.0
# ...and after this long of silence (several pulls unanswered: on 5% loss each way seven fail
# with p < 1e-7) its link is closed and the ring repaired. A crashed neighbour is thus noticed
# in seconds, not at the link layer's LINK_TIMEOUT_S, which is what bounds ring repair.
OVERLAY_NEAR_DEAD_S = 14.0
# A next hop we route into without hearing back is probed after one retransmission timeout,
# again after two, and avoided (when another hop makes progress) after three (see
# ipop.overlay.suspect). The timeout is the hop's srtt + 4 rttvar from its probe answers, never
# below the floor (a busy daemon's scheduling delay) nor above the cap (a dead hop is avoided
# within 3 s whatever its round trip); the initial one, before any answer, suits a continental
# round trip. The floor was 30 ms: in a 32-daemon cold start on two cores, peers on 5-20 ms
# links answered after 50-250 ms while busy, and 3,400 probes went out, nearly all answered at
# once (a tenth of all datagrams, spent where CPU was shortest); at 0.2 s, 1,000-1,450 (five
# starts each, alternated: 12 % fewer datagrams, pingable p50 6.8 -> 6.3 s). The price: a dead
# hop on a fast link is avoided after 0.6 s instead of 0.1 s.
OVERLAY_HOP_RTO_MIN_S = 0.2
OVERLAY_HOP_RTO_MAX_S = 1.0
OVERLAY_HOP_RTO_INITIAL_S = 0.3
# While a next hop stays suspect, its ALIVE probes follow at doubling intervals up to this.
OVERLAY_HOP_PROBE_MAX_S = 4.0
# Give up on direct attempts toward a peer after this long and fall back to a relay (near
# links) or give up (far, shortcut): longer than HANDSHAKE_TIMEOUT_S, which fails them first.
OVERLAY_CONNECT_TIMEOUT_S = 25.0
# Start a relay link toward a near candidate this long after the direct attempts began, while
# they go on: a symmetric NAT makes the direct ones fail only at HANDSHAKE_TIMEOUT_S, and the
# ring (and traffic to that node) should not wait that long. Whichever path is up first wins.
OVERLAY_RELAY_AFTER_S = 2.0
# Of two nodes that both want a relayed link to the other, the larger id starts its relay
# attempt this much later: a relayed handshake (two overlay hops each way) is up well within
# it, and two crossing through different relays can leave the ends on different keys.
OVERLAY_RELAY_YIELD_S = 3.0
# A CONNECT_TO_ME answer later than this is ignored: bounds request state; a lost one is
# simply asked again by the policy that wanted it.
OVERLAY_CTM_TIMEOUT_S = 10.0
# A routed message authenticated more than this far from our clock is refused: bounds how long
# a forwarder can replay what it carried. The handshake's skew, not less: a node whose clock is
# off enough to link at all must not find every routed message refused (its DHT would fail
# with no error to show for it).
ROUTED_MAX_AGE_S = HANDSHAKE_CLOCK_SKEW_S
# What one CONNECT_TO_ME may make us send (its endpoints are only the requester's word, and a
# member could name anybody's): at most this many of them are connected back to (one LAN,
# the rest public), each with one Init and no retransmission (the requester's own Inits, sent
# as it reads our answer, are the retried half of the punch), an Init being 482 bytes against
# a CTM's 100-150: one Init per named address keeps the reflection near 3x the CTM's bytes.
OVERLAY_CONNECT_BACK_MAX = 3
OVERLAY_CONNECT_BACK_ATTEMPTS = 1
# How long such a single Init waits for its Resp: the handshake timeout, as before. Why not a
# few round trips: the attempt is what carries the requester's wish (a far link, a shortcut)
# to the link its own Inits bring up, often later than that (its NAT, its retries); given up
# at 3 s, those links came up as mere leaves and were trimmed (a 200-node run's ttl_expired
# drops went from 16 to 98).
OVERLAY_CONNECT_BACK_TIMEOUT_S = HANDSHAKE_TIMEOUT_S
# Per requester (its authenticated node id), a token bucket of CTMs we act on: a burst of
# this many, then one per OVERLAY_CTM_REFILL_S. An honest node sends a few at join and one
# per policy decision; past it, CTMs are dropped unanswered.
OVERLAY_CTM_BURST = 8
OVERLAY_CTM_REFILL_S = 1.0
# Per destination IPv4 address, whoever named it: a bucket of connect-back attempts, so that
# many requesters naming one victim cannot add up (a burst, then one per refill interval).
# A NAT with many members behind one address joining at once only loses our half of the punch
# past the burst: their own Inits still go out.
OVERLAY_CONNECT_BACK_IP_BURST = 8
OVERLAY_CONNECT_BACK_IP_REFILL_S = 2.0
# Connect-back attempts (to anyone) in flight at once (most end within a round trip, when
# the requester's link comes up; the ones that fail hold a slot for the timeout above).
OVERLAY_CONNECT_BACK_INFLIGHT = 64
# A peer's NEIGHBOURS with REPLY_WANTED is answered at most this often past a small burst:
# honest pulls come once per tick (OVERLAY_TICK_S), twice when a repair probe meets a pull of a
# silent peer.
OVERLAY_NEIGHBOURS_REPLY_MIN_S = 0.5
# A bootstrap link (or an unsolicited inbound one) keeps its LEAF reason this long, so join
# answers can travel back over it while the joiner builds its near links.
OVERLAY_LEAF_HOLD_S = 60.0
# An idle link (no reason left) is closed only after this long: near membership flaps while
# nodes join nearby, and a close costs a new handshake when the link is wanted again.
OVERLAY_TRIM_GRACE_S = 30.0
# A link we relay over keeps its RELAY reason this long after the last relayed datagram:
# above two keepalive intervals, so an idle but live tunnel is never cut under its users.
OVERLAY_RELAY_HOLD_S = 60.0
# Proximity neighbour selection (ipop/overlay/proximity.py): one far-link exploration at a
# time, at most one per this interval: one a tick, so a node holding ~10 far links has
# tried four candidates per bucket about a minute after it joined.
OVERLAY_FAR_EXPLORE_S = 1.0
# Explorations per distance bucket and epoch. Why four: with k candidates the fastest is
# from the nearest of r equal regions with probability 1 - (1 - 1/r)**k (r = 6: 52 % for the
# four, 60 % with the link Symphony drew first); each costs a handshake and a link that lives
# out the trim grace. Why an epoch: churn replaces far links with ones drawn at random, and
# nodes near us may have joined since; ten minutes cost a node ~4 handshakes a minute at most.
OVERLAY_FAR_EXPLORE_PER_BUCKET = 4
OVERLAY_FAR_EXPLORE_EPOCH_S = 600.0
# Far-link candidates from our fastest peers' fastest links (FAST_PEERS, see
# ipop/overlay/proximity.py): this many peers asked per exploration epoch, one per interval.
# Why four, five seconds apart: the first answers come while exploration has just begun (it
# needs about a minute), and four lists of 16 hold more candidates than the ~40 explorations
# of an epoch can use. An answer is awaited this long (a round trip, with room to spare).
OVERLAY_FAST_PEERS_PER_EPOCH = 4
OVERLAY_FAST_PEERS_ASK_S = 5.0
OVERLAY_FAST_PEERS_TIMEOUT_S = 5.0
# A peer's FAST_PEERS questions answered at once, then one per this interval: the answer is
# larger than the question (up to 323 bytes for 3), and one per epoch is all a node asks.
OVERLAY_FAST_PEERS_REPLY_MIN_S = 30.0
# Proximity route selection (ipop/overlay/routing.py): a hop's estimated cost is its round
# trip plus this much per bit of ring distance it leaves to the target. Why 5 ms: on the
# simulator's map (1,000 nodes, links frozen, 2,000 pairs) 4-6 ms gave the least stretch, 3
# and 8 ms more; a bit left costs about 0.4 more hops, inside a region ~6 ms one way each.
OVERLAY_PRS_BIT_S = 0.005
# Link hints (ipop/overlay/linkhints.py): a peer we measured within this round trip tells us
# which nodes it holds links to, and we tell it ours. Why 30 ms: inside a region links are 2-15
# ms one way on the simulator's map, between regions 20-150; a hop to a peer this fast that
# holds a link to the target saves the region-leaving last hops the stretch tail is made of.
OVERLAY_LINK_HINT_RTT_S = 0.030
# A peer's list is sent again when our links changed, at most this often, and at least this
# often anyway; what a peer said is believed for HINT_S (three refreshes: one lost list is
# no gap). At 1,000 nodes a node's links change about every 10 s while far links are being
# explored, so a fast link carries about one ~380-byte list per 10 s each way (~40 B/s).
OVERLAY_LINK_IDS_MIN_S = 10.0
# A new link gets its first list only this long after it came up. Why: the two ends of a
# simultaneous open may still disagree on the session's keys for a moment; a list sent then
# lands under keys the peer dropped (unknown_index) and sets off a key repair that costs the
# link's other traffic (300 nodes: routed pings lost on the first try, slower convergence).
OVERLAY_LINK_IDS_SETTLE_S = 5.0
OVERLAY_LINK_IDS_REFRESH_S = 60.0
OVERLAY_LINK_HINT_S = 180.0
# Retry the bootstrap endpoints this often while we have no link at all.
OVERLAY_BOOTSTRAP_RETRY_S = 10.0
# A peer we could not link to at all (not even relayed) is not asked again for this long.
# Two near retries, not 30 s: such a peer is usually a near neighbour the ring cannot close
# without, and 30 s was half the churn repair budget (1,000 nodes, 30% churn, seed 5: the only
# pair left unlinked at 60 s had one failed relay attempt; repaired at 59 s with 10 s).
OVERLAY_FAILED_BACKOFF_S = 10.0
# A reverse hint (which peer last handed us a routed message from a node we hold no link to,
# ipop/overlay/hints.py) is kept this long: a few seconds cover the time a new node's near
# links take to form, after which the ring routes its answers.
OVERLAY_REVERSE_HINT_S = 10.0

# --- shortcuts (ipop/core.py) ---------------------------------------------------------------------
# A shortcut (a direct link asked for because we exchange data with a peer) is released after
# this long without data to that peer: its keepalives would hold a NAT mapping for nothing.
SHORTCUT_IDLE_S = 120.0
# At most this many shortcuts at once; past it the least recently used one goes. Each costs a
# keepalive every KEEPALIVE_INTERVAL_S and a session; a node talking to thousands of peers
# keeps the busiest and routes the rest over the ring.
SHORTCUT_MAX = 128
# A shortcut request for one peer stands this long before traffic may ask again: a request
# costs a CONNECT_TO_ME and handshakes, and its link is usually up within a second or two.
SHORTCUT_RETRY_S = 10.0
# A route over the ring probed for its path MTU (ipop/core.py) is forgotten this long after its
# last IP packet: the TAP's MTU follows live routes only.
ROUTE_PROBE_IDLE_S = 120.0

# --- path choice (ipop/link/paths.py) -------------------------------------------------------------
# A direct path that delivered nothing authenticated for this long may be replaced by any
# working one (a handshake's or the peer's newest packets'); one in use is only replaced by a
# clearly faster one, so two live paths never flap.
PATH_SILENT_S = 1.0
# A direct path replaces the one in use only if its handshake was this much faster (a ratio,
# not a time): two paths of about the same round trip never flap.
PATH_SWITCH_RATIO = 0.7
# A relay replaces a direct path only once nothing authenticated has come from the peer for
# this long (see ipop.link.paths.better_path): well past a handshake's round trip, so a relay
# handshake racing a direct one that just completed never wins.
RELAY_TAKEOVER_SILENT_S = 2.0

# --- roaming (ipop/overlay/node.py, ipop/aio/addrwatch.py) ----------------------------------------
# After our own address changed, our endpoints are re-advertised as soon as a peer tells us our
# new public one (one round trip to a public peer), or this long after at the latest (no peer
# can hear us yet: advertise what we know). Well inside the 2 s traffic may stall for.
ROAM_ADVERTISE_WAIT_S = 0.5
# A node behind a NAT asks one peer outside it where it sees us this often, traffic or not
# (ipop.nat.mapping): after its NAT dropped its mappings, every inbound path to it is dead
# until it sends, and an idle node sent next with the overlay's gossip (up to 6 s later).
# Noticed within this plus a round trip, the rebinding re-keys every session.
MAPPING_CHECK_S = 2.0
# A peer that sees us at a new endpoint means our NAT rebound; at most one roam this often
# (each one costs a CTM per direct peer), and never right after one (answers to the
# re-handshakes of a roam report new endpoints one after another).
ROAM_REBIND_MIN_S = 10.0
# After a roam or a wake-up, a direct session that has heard nothing from its peer since is
# keyed afresh through a relay this long after: a re-key from the new address is answered
# within a round trip wherever the peer can hear us, but a peer behind a filtering NAT that
# port guessing had reached cannot (our new mapping toward it is one nobody knows).
ROAM_RELAY_AFTER_S = 1.0
# The same after our NAT rebound, counted from when we noticed it. Longer: our address stayed,
# and a peer behind a port-restricted NAT punches back to the new mapping we re-advertise
# within about a second (a relay taking over first only delays its direct path); a pair that
# port guessing joined cannot (the guessing side's NAT admits only the old mapping), and it
# stayed cut off until its link timed out (50 s in the soak's NAT flushes).
REBIND_RELAY_AFTER_S = 2.0
# ... and every other direct session still silent this long after the rebinding: its peer did
# not punch back within a second or two, so our new mapping toward it is not the one we
# advertised (two hosts behind one NAT that lost its table each keep the old port only toward
# the peers they reached first). Without it the pair waited for its link timeout (14 s).
REBIND_RELAY_ALL_AFTER_S = 4.0
# After that first check, sessions still silent are looked at again this often (a relay may
# have been heard from since, or one fallback's relay failed), for this long after the roam:
# well before the link timeout, past which the overlay reconnects anyway.
ROAM_RELAY_CHECK_S = 1.0
ROAM_FALLBACK_WINDOW_S = 20.0
# A direct session whose path fell silent (two echoes unanswered, ipop.link.rebind) is keyed
# through a relay this long after: the witnesses asked at its first unanswered echo have
# answered by then (2 x REBIND_ECHO_WAIT_S), and a rebinding of our NAT is a roam's to handle.
SILENT_PATH_RELAY_AFTER_S = 0.5
# One relay fallback per peer per this long: a relay that cannot reach the peer either is not
# retried at every roam of a restless host.
ROAM_RELAY_RETRY_S = 10.0
# Relay channels (ipop.overlay.channels): while a relayed link sends on one, its origin asks
# the relay again this often (the relay forgets a channel after three of these without);
# an unanswered ask is repeated after the shorter wait (one lost datagram, not a refusal).
RELAY_CHANNEL_REFRESH_S = 10.0
RELAY_CHANNEL_RETRY_S = 2.0
# The node's timers, which run at least every OVERLAY_TICK_S, did not run for this long: the
# process was stopped or the machine slept. Peers may have timed our sessions out and NATs
# dropped our mappings, while our own sessions all look dead at once (no traffic for the whole
# gap): re-key and re-advertise as after a roam, instead of closing every link and rejoining.
WAKE_GAP_S = 10.0
# NAT rebinding (ipop/link/echo.py, ipop/link/rebind.py): a direct link carrying traffic
# that was busy (its last REBIND_BUSY_PACKETS + 1 packets each within REBIND_QUIET_S of the one
# before), or that answered nothing to a message of ours, gets one authenticated echo once it
# has been silent for REBIND_QUIET_S (links carrying only overlay messages get none: their
# bursts would each cost one). An echo unanswered after REBIND_ECHO_WAIT_S makes us ask up to
# REBIND_WITNESSES other peers (at most once per REBIND_WITNESS_MIN_S) where they see us: a
# changed answer means our NAT rebound. Quiet + wait + a round trip + the peer's punch back
# fit in the 2 s traffic may stall for.
REBIND_QUIET_S = 0.5
REBIND_BUSY_PACKETS = 4
REBIND_ECHO_WAIT_S = 0.5
REBIND_WITNESSES = 3
REBIND_WITNESS_MIN_S = 2.0
# The address watcher re-reads the interface addresses this long after a netlink change
# message (a DHCP renewal sends several at once), and polls this often without netlink.
ADDRWATCH_SETTLE_S = 0.1
ADDRWATCH_POLL_S = 1.0

# --- port guessing toward symmetric NATs (ipop/nat/portguess.py) ----------------------------------
# Extra sockets a symmetric node opens toward a peer: each holds one random NAT port that
# accepts the peer. With BIRTHDAY_KNOCKS guesses per round over the 64,512 ports MASQUERADE
# draws from, a round finds one with odds 1 - exp(-SOCKETS * KNOCKS / 64512): 98 % at 256 x 1024.
BIRTHDAY_SOCKETS = 256
# Knocks per round: 20-byte datagrams, so a round is 20 KB.
BIRTHDAY_KNOCKS = 1024
# Rounds per run (fresh random ports each): three rounds miss with odds below 1e-5.
BIRTHDAY_ROUNDS = 3
# Between rounds: long enough for a hit's handshake to come back and stop the run.
BIRTHDAY_ROUND_S = 0.3
# A direct path that comes up this long after a knock run's last round still counts as found
# by the knocking: the symmetric side's handshake on the opened path takes a few round trips.
BIRTHDAY_JOIN_SLACK_S = 5.0
# A token given out in a GO is good this long: the knock runs end well inside it.
BIRTHDAY_WINDOW_S = 5.0
# One HELLO (and one knock run) per peer this often at most: a pair whose guessing failed
# stays relayed without spraying the network on every packet.
BIRTHDAY_RETRY_S = 30.0
# Knock runs at once: bounds what GOs from many peers can make us send.
BIRTHDAY_MAX_RUNS = 4
# Peers a symmetric node opens its punching sockets toward within one BIRTHDAY_WINDOW_S (each
# open is BIRTHDAY_SOCKETS openers per endpoint, and knock runs answer it): when a whole
# network first talks to one symmetric node at once (a 31-daemon lab's first sweep: ~13 each),
# the rest wait for their next HELLO and their traffic keeps its relayed or routed path.
BIRTHDAY_MAX_OPENS = 4
# A GO is acted on only this long after our HELLO to its sender (the HELLO it answers
# crossed the overlay once, the GO once back): a GO nobody asked for starts nothing.
BIRTHDAY_GO_WAIT_S = 10.0
# Openers go to at most this many of a peer's endpoints (its public ones where we saw it):
# 256 openers of 20 bytes each per endpoint.
BIRTHDAY_OPEN_ENDPOINTS = 2
# Punching sockets no session uses are closed this long after port guessing last opened them
# (ipop/aio/stack.py; a guess is over within BIRTHDAY_WINDOW_S; the retry interval is
# BIRTHDAY_RETRY_S).
PUNCH_SOCKET_IDLE_S = 30.0
