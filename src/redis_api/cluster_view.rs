//! This node's place in a Redis Cluster, read from its own CLUSTER MYID and
//! CLUSTER SLOTS at the start of each run (slots move between runs).

use std::sync::{Arc, Mutex};

use redis_module::{CallOptionsBuilder, CallReply, CallResult, Context, ContextFlags};

use crate::cluster::SlotSet;

static CURRENT: Mutex<Option<Arc<SlotSet>>> = Mutex::new(None);

pub fn in_cluster(ctx: &Context) -> bool {
    ctx.get_flags().contains(ContextFlags::CLUSTER)
}

/// Reads the slots this node serves now (all of them outside cluster mode) and
/// keeps them for writes made during the run. The caller holds the GIL.
pub fn refresh(ctx: &Context) -> Arc<SlotSet> {
    let slots = Arc::new(if in_cluster(ctx) {
        read_slots(ctx)
    } else {
        SlotSet::all()
    });
    *CURRENT.lock().unwrap() = Some(Arc::clone(&slots));
    slots
}

/// The slots read by the last refresh (all, before any).
pub fn current() -> Arc<SlotSet> {
    CURRENT
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| Arc::new(SlotSet::all()))
}

fn call<'a>(ctx: &'a Context, args: &[&str]) -> CallResult<'a> {
    let options = CallOptionsBuilder::new().errors_as_replies().build();
    ctx.call_ext(args[0], &options, &args[1..])
}

fn text(reply: &CallResult<'_>) -> Option<String> {
    match reply {
        Ok(CallReply::String(s)) => s.to_string(),
        _ => None,
    }
}

fn int(reply: &CallResult<'_>) -> Option<i64> {
    match reply {
        Ok(CallReply::I64(i)) => Some(i.to_i64()),
        _ => None,
    }
}

/// The ranges of CLUSTER SLOTS whose primary is this node.
fn read_slots(ctx: &Context) -> SlotSet {
    let me = text(&call(ctx, &["CLUSTER", "MYID"])).unwrap_or_default();
    let mut ranges = Vec::new();
    if let Ok(CallReply::Array(entries)) = call(ctx, &["CLUSTER", "SLOTS"]) {
        for entry in entries.iter() {
            let Ok(CallReply::Array(entry)) = entry else {
                continue;
            };
            let (Some(start), Some(end)) = (
                entry.get(0).and_then(|r| int(&r)),
                entry.get(1).and_then(|r| int(&r)),
            ) else {
                continue;
            };
            let primary_id = match entry.get(2) {
                Some(Ok(CallReply::Array(node))) => node.get(2).and_then(|r| text(&r)),
                _ => None,
            };
            if primary_id.as_deref() == Some(me.as_str()) {
                ranges.push((start as u16, end as u16));
            }
        }
    }
    SlotSet::from_ranges(&ranges)
}
