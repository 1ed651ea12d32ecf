//! `INFO consistency`: the module-wide fields, then one dict field per loaded
//! rule (`consistency_rule_<name>:checked=...,drifted=...`). The figures come
//! from `stats`; this file only writes them into Redis's INFO context.

use std::os::raw::c_int;

use redis_module::raw;

use crate::state;
use crate::stats;

/// The INFO callback Redis calls for `INFO consistency` (and INFO everything).
pub extern "C" fn write(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    let lanes = state::lanes();
    let rules = state::rules();
    let fields = stats::info_fields(
        rules.rules.len(),
        lanes.truth.queued(),
        lanes.keyspace.queued(),
    );
    raw::add_info_section(ctx, None);
    for (name, value) in fields {
        raw::add_info_field_long_long(ctx, name, value);
    }
    // Rule names are checked at load to hold no NUL byte; Redis itself turns
    // a ':' in a field name into '_' so INFO stays parseable.
    for rule in &rules.rules {
        let name = &rule.rule.name;
        raw::add_info_begin_dict_field(ctx, &format!("rule_{name}"));
        let dirty = state::dirty().pending(name);
        for (field, value) in stats::rule_info_fields(name, dirty) {
            raw::add_info_field_long_long(ctx, field, value);
        }
        if rule.rule.watch {
            let tally = state::watch_samples().tally(name);
            for (field, value) in stats::watch_info_fields(&tally) {
                raw::add_info_field_long_long(ctx, field, value);
            }
            raw::add_info_field_str(ctx, "nines", &tally.nines());
        }
        raw::add_info_end_dict_field(ctx);
    }
}
