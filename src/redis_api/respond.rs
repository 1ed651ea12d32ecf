//! Writes a [`Reply`] tree to a client, at the edge. Maps go out with
//! `RedisModule_ReplyWithMap`, so RESP3 clients get maps and RESP2 clients flat
//! arrays; doubles and booleans likewise follow the client's protocol.

use std::os::raw::{c_char, c_long};

use redis_module::{raw, Context};

use crate::reply::Reply;
use crate::text::one_line;

/// Sends `reply` on `ctx` (a command context or a blocked client's thread-safe
/// context; replies need no GIL on the latter).
pub fn send(ctx: &Context, reply: &Reply) {
    write(ctx.ctx, reply)
}

fn write(ctx: *mut raw::RedisModuleCtx, reply: &Reply) {
    match reply {
        Reply::Int(i) => {
            raw::reply_with_long_long(ctx, *i);
        }
        Reply::Double(d) => {
            raw::reply_with_double(ctx, *d);
        }
        Reply::Bool(b) => {
            raw::reply_with_bool(ctx, i32::from(*b));
        }
        Reply::Bulk(bytes) => {
            raw::reply_with_string_buffer(ctx, bytes.as_ptr().cast::<c_char>(), bytes.len());
        }
        Reply::Null => {
            raw::reply_with_null(ctx);
        }
        Reply::Array(items) => {
            raw::reply_with_array(ctx, items.len() as c_long);
            for item in items {
                write(ctx, item);
            }
        }
        Reply::Map(fields) => send_map(ctx, fields.iter().map(|(n, v)| (*n, v)), fields.len()),
        Reply::NamedMap(fields) => send_map(
            ctx,
            fields.iter().map(|(n, v)| (n.as_str(), v)),
            fields.len(),
        ),
        Reply::Error(message) => {
            // Error lines cannot hold CR, LF or NUL.
            let line = one_line(message);
            let line = std::ffi::CString::new(line.as_bytes()).unwrap_or_default();
            unsafe { raw::RedisModule_ReplyWithError.unwrap()(ctx, line.as_ptr()) };
        }
    }
}

fn send_map<'a>(
    ctx: *mut raw::RedisModuleCtx,
    fields: impl Iterator<Item = (&'a str, &'a Reply)>,
    len: usize,
) {
    raw::reply_with_map(ctx, len as c_long);
    for (name, value) in fields {
        raw::reply_with_string_buffer(ctx, name.as_ptr().cast::<c_char>(), name.len());
        write(ctx, value);
    }
}
