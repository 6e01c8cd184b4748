//! The durable store's setup: open it (or move a damaged one aside), restore the broker
//! from it, and start the group-commit thread whose reports reach the adapter's core.

use crate::config::Persistence;
use mqtt_broker::Broker;
use std::time::Instant;
use tracing::{info, warn};

/// Opens the store, or, when configured, moves a damaged one aside and starts empty.
pub fn open_store(p: &Persistence) -> anyhow::Result<(mqtt_store::Store, mqtt_broker::Snapshot)> {
    match mqtt_store::Store::open(&p.dir) {
        Ok(s) => Ok(s),
        Err(e) if p.on_damage == "move-aside" => {
            let to = mqtt_store::move_aside(&p.dir)
                .map_err(|io| anyhow::anyhow!("{e}; moving it aside failed: {io}"))?;
            warn!(error = %e, moved_to = %to.display(), "store damaged; moved aside, starting empty");
            Ok(mqtt_store::Store::open(&p.dir)?)
        }
        Err(e) => Err(anyhow::anyhow!(
            "{e}; refusing to start (set persistence.on_damage = \"move-aside\" to move it \
             aside and start empty)"
        )),
    }
}

/// With persistence enabled: opens the store, restores `broker` from it, and starts the
/// committer, whose reports go to `report` (from the committer's thread; the adapter
/// forwards them to its core as an input). `None` when persistence is off.
///
/// Call it before any listener accepts: the durable state comes back first.
pub fn start(
    p: &Persistence,
    broker: &mut Broker,
    report: impl FnMut(mqtt_store::Report) + Send + 'static,
) -> anyhow::Result<Option<mqtt_store::Persister>> {
    if !p.enabled {
        return Ok(None);
    }
    let (store, snapshot) = open_store(p)?;
    info!(
        dir = %p.dir.display(),
        durability = %p.durability,
        sessions = snapshot.sessions.len(),
        retained = snapshot.retained.len(),
        "store opened"
    );
    broker.restore(Instant::now(), snapshot);
    let durability = p.durability();
    let committer = mqtt_store::Committer::spawn(store, durability, report);
    Ok(Some(mqtt_store::Persister::new(committer, durability)))
}
