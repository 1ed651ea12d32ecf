//! CONSISTENCY.RELOAD: re-read the rules file.

use redis_module::{Context, RedisResult, RedisString};

use super::{guarded, Outcome};
use crate::args::{display_arg, ArgError};
use crate::error::CommandError;
use crate::reply::Reply;
use crate::state;

/// ```text
/// CONSISTENCY.RELOAD
/// ```
/// Re-reads `consistency.rules-file`. A bad file is refused with the file, the
/// rule and the problem, and the rules in force stay.
pub fn reload(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(ctx, args, |_ctx, args| {
        if let Some(extra) = args.first() {
            return Err(ArgError::UnknownOption(display_arg(extra)).into());
        }
        let file = state::rules_file();
        if file.is_empty() {
            return Err(CommandError::Reload(
                "consistency.rules-file is not set".into(),
            ));
        }
        let count = state::load_rules(&file).map_err(|e| CommandError::Reload(e.to_string()))?;
        log::info!("consistency: reloaded {count} rules from '{file}'");
        Ok(Outcome::Reply(Reply::Map(vec![
            ("rules", Reply::Int(count as i64)),
            ("file", Reply::text(file)),
        ])))
    })
}
