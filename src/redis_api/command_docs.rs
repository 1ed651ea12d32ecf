//! What `COMMAND DOCS` says about each CONSISTENCY.* command: summary, since,
//! complexity, arity and the argument tree, as plain data ([`COMMANDS`]), plus
//! the one function ([`register`]) that hands it to `RedisModule_SetCommandInfo`.
//!
//! The grammar mirrors the `///` synopsis above each handler in `commands/`;
//! the handlers parse their own arguments, so this is documentation for tools
//! (redis-cli hints, COMMAND DOCS), never validation.

use std::ffi::CString;
use std::os::raw::c_int;
use std::ptr;

use redis_module::{raw, Context};

/// The module release in which every command below first appeared. Fixed, not
/// the crate version: `since` must not move when the crate is bumped.
pub const SINCE: &str = "0.1.0";

/// Argument types, as `RedisModuleCommandArgType` knows them (those we use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgType {
    String,
    Integer,
    Double,
    Pattern,
    PureToken,
    OneOf,
    Block,
}

/// One node of a command's argument tree.
#[derive(Clone, Copy, Debug)]
pub struct Arg {
    pub name: &'static str,
    pub kind: ArgType,
    pub token: Option<&'static str>,
    pub optional: bool,
    pub multiple: bool,
    /// The token repeats with each value (`[RULE name]...`).
    pub multiple_token: bool,
    pub subargs: &'static [Arg],
}

impl Arg {
    const fn new(name: &'static str, kind: ArgType) -> Arg {
        Arg {
            name,
            kind,
            token: None,
            optional: false,
            multiple: false,
            multiple_token: false,
            subargs: &[],
        }
    }

    const fn string(name: &'static str) -> Arg {
        Arg::new(name, ArgType::String)
    }

    /// A bare keyword: its name is its token.
    const fn keyword(token: &'static str) -> Arg {
        Arg::new(token, ArgType::PureToken).token(token)
    }

    const fn one_of(name: &'static str, subargs: &'static [Arg]) -> Arg {
        Arg::new(name, ArgType::OneOf).subargs(subargs)
    }

    const fn block(name: &'static str, subargs: &'static [Arg]) -> Arg {
        Arg::new(name, ArgType::Block).subargs(subargs)
    }

    const fn token(mut self, token: &'static str) -> Arg {
        self.token = Some(token);
        self
    }

    const fn optional(mut self) -> Arg {
        self.optional = true;
        self
    }

    const fn multiple(mut self) -> Arg {
        self.multiple = true;
        self
    }

    /// `[TOKEN value]...`: optional, repeatable, token repeated each time.
    const fn repeated(mut self) -> Arg {
        self.optional = true;
        self.multiple = true;
        self.multiple_token = true;
        self
    }

    const fn subargs(mut self, subargs: &'static [Arg]) -> Arg {
        self.subargs = subargs;
        self
    }
}

/// One command's documentation.
#[derive(Clone, Copy, Debug)]
pub struct CommandDoc {
    pub name: &'static str,
    pub summary: &'static str,
    pub complexity: &'static str,
    /// -1 (any number of arguments), as CreateCommand left it: each handler
    /// answers a wrong argument list with its own, more specific error.
    pub arity: i32,
    pub args: &'static [Arg],
}

const RULES_ARG: Arg = Arg::string("rule").token("RULE").repeated();
const ID_ARG: Arg = Arg::string("id").token("ID").repeated();
const DRYRUN_ARG: Arg = Arg::keyword("DRYRUN").optional();
const REWRITE_ARG: Arg = Arg::keyword("REWRITE").optional();
const CHANGED_ARG: Arg = Arg::keyword("CHANGED").optional();
const THRESHOLD_ARG: Arg = Arg::new("threshold", ArgType::Double)
    .token("THRESHOLD")
    .optional();
const LIMIT_ARG: Arg = Arg::new("limit", ArgType::Integer)
    .token("LIMIT")
    .optional();
const FORMAT_ARG: Arg = Arg::one_of("format", &[Arg::keyword("resp"), Arg::keyword("json")])
    .token("FORMAT")
    .optional();

/// Every CONSISTENCY.* command the module registers (CONSISTENCY.DEBUG, a test
/// hook, is left undocumented on purpose).
pub const COMMANDS: &[CommandDoc] = &[
    CommandDoc {
        name: "consistency.check",
        summary: "Compares the cached keys of the selected rules (all by default) with the truth \
                  in PostgreSQL and reports what drifted. Read-only.",
        complexity: "O(N) where N is the number of keys the selected rules cover, plus one \
                     PostgreSQL query per rule; with CHANGED, O(C) for the C ids written or \
                     changed since the last check.",
        arity: -1,
        args: &[
            CHANGED_ARG,
            RULES_ARG,
            ID_ARG,
            THRESHOLD_ARG,
            LIMIT_ARG,
            FORMAT_ARG,
        ],
    },
    CommandDoc {
        name: "consistency.fix",
        summary: "Repairs drifted keys: with ids, clears (or rewrites to the truth) each \
                  selected rule's key for those ids; with ALL, checks first and repairs only \
                  verified findings.",
        complexity: "With ids: O(I*R) for I ids and R rules. With ALL: O(N) like \
                     CONSISTENCY.CHECK, plus one write per repaired key.",
        arity: -1,
        args: &[
            Arg::one_of(
                "target",
                &[
                    Arg::block("ids", &[Arg::string("id").multiple(), ID_ARG]),
                    Arg::block("all", &[Arg::keyword("ALL"), CHANGED_ARG, THRESHOLD_ARG]),
                ],
            ),
            RULES_ARG,
            DRYRUN_ARG,
            REWRITE_ARG,
            FORMAT_ARG,
        ],
    },
    CommandDoc {
        name: "consistency.purge",
        summary: "Scans for keys matching a glob pattern or a rule's key template and unlinks \
                  them in slices; works while PostgreSQL is down.",
        complexity: "O(N) where N is the number of keys in the database (a scan), plus one \
                     UNLINK per matching key.",
        arity: -1,
        args: &[
            Arg::one_of(
                "target",
                &[
                    Arg::new("pattern", ArgType::Pattern).token("MATCH"),
                    Arg::string("rule").token("RULE"),
                ],
            ),
            DRYRUN_ARG,
            LIMIT_ARG,
        ],
    },
    CommandDoc {
        name: "consistency.status",
        summary: "Shows the version, the rules loaded, PostgreSQL's state, the work queues, \
                  the last check and the schedule. Never contacts PostgreSQL.",
        complexity: "O(1)",
        arity: -1,
        args: &[],
    },
    CommandDoc {
        name: "consistency.rules",
        summary: "Lists the loaded rules with every setting, defaults filled in.",
        complexity: "O(N) where N is the number of rules.",
        arity: -1,
        args: &[],
    },
    CommandDoc {
        name: "consistency.reload",
        summary: "Re-reads consistency.rules-file; a bad file is refused and the rules in \
                  force stay.",
        complexity: "O(N) where N is the size of the rules file.",
        arity: -1,
        args: &[],
    },
];

// ---------------------------------------------------------------------------
// FFI. This part belongs with the module-API adapter (the code that talks to
// `raw::`); it lives here until that adapter exists, so the data above stays
// next to the one function that reads it.
// ---------------------------------------------------------------------------

/// Redis reads our structs with these sizes (it steps through arrays by
/// `sizeof_arg`), so a server built with an older header still reads them right.
static INFO_VERSION: raw::RedisModuleCommandInfoVersion = raw::RedisModuleCommandInfoVersion {
    version: 1,
    sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
    sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
    sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
};

/// Owns every C string and argument array handed to one SetCommandInfo call.
/// Moving a CString or Vec into it does not move its heap buffer, so the
/// pointers taken before stay valid until the arena is dropped (after the call:
/// Redis copies what it keeps).
#[derive(Default)]
struct Arena {
    strings: Vec<CString>,
    arrays: Vec<Vec<raw::RedisModuleCommandArg>>,
}

impl Arena {
    fn text(&mut self, s: &str) -> *const std::os::raw::c_char {
        // Our strings are literals without NULs; a NUL would only cut the text.
        let c = CString::new(s.split('\0').next().unwrap_or("")).unwrap_or_default();
        let p = c.as_ptr();
        self.strings.push(c);
        p
    }

    /// A zero-terminated array of `args`, or null when there are none.
    fn args(&mut self, args: &[Arg]) -> *mut raw::RedisModuleCommandArg {
        if args.is_empty() {
            return ptr::null_mut();
        }
        let mut out: Vec<raw::RedisModuleCommandArg> = Vec::with_capacity(args.len() + 1);
        for a in args {
            let mut flags = raw::REDISMODULE_CMD_ARG_NONE;
            if a.optional {
                flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
            }
            if a.multiple {
                flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
            }
            if a.multiple_token {
                flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE_TOKEN;
            }
            let mut arg = zeroed_arg();
            arg.name = self.text(a.name);
            arg.type_ = raw_type(a.kind);
            arg.key_spec_index = -1;
            arg.token = a.token.map_or(ptr::null(), |t| self.text(t));
            arg.flags = flags as c_int;
            arg.subargs = self.args(a.subargs);
            out.push(arg);
        }
        // The API's terminator: an element whose name is NULL.
        out.push(zeroed_arg());
        let p = out.as_mut_ptr();
        self.arrays.push(out);
        p
    }
}

fn zeroed_arg() -> raw::RedisModuleCommandArg {
    // SAFETY: a plain C struct of pointers and integers; all-zero is valid
    // (null pointers, type 0, no flags) and is the terminator the API expects.
    unsafe { std::mem::zeroed() }
}

fn raw_type(kind: ArgType) -> raw::RedisModuleCommandArgType {
    match kind {
        ArgType::String => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
        ArgType::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
        ArgType::Double => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_DOUBLE,
        ArgType::Pattern => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PATTERN,
        ArgType::PureToken => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
        ArgType::OneOf => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF,
        ArgType::Block => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK,
    }
}

/// Hands [`COMMANDS`] to `RedisModule_SetCommandInfo` after the commands are
/// created (call it from `init`). Redis 6.x lacks the function (and
/// RedisModule_GetCommand): then it does nothing and returns 0. A command the
/// server refuses to document is logged and skipped: docs are not worth failing
/// the load. Returns how many commands were documented.
pub fn register(ctx: &Context) -> usize {
    let ctx = ctx.ctx;
    // SAFETY: reading the function pointers RedisModule_Init filled in; at the
    // 6.0 compatibility level they are None where the server lacks them.
    let (Some(get_command), Some(set_info)) = (unsafe { raw::RedisModule_GetCommand }, unsafe {
        raw::RedisModule_SetCommandInfo
    }) else {
        return 0;
    };
    let mut documented = 0;
    for doc in COMMANDS {
        let mut arena = Arena::default();
        let name = arena.text(doc.name);
        // SAFETY: `ctx` is the module's load context and `name` a live C string.
        let command = unsafe { get_command(ctx, name) };
        if command.is_null() {
            log::warn!("consistency: no command {} to document", doc.name);
            continue;
        }
        let info = raw::RedisModuleCommandInfo {
            version: &INFO_VERSION,
            summary: arena.text(doc.summary),
            complexity: arena.text(doc.complexity),
            since: arena.text(SINCE),
            history: ptr::null_mut(),
            tips: ptr::null(),
            arity: doc.arity,
            // None: the key spec Redis derived from first/last/step stays.
            key_specs: ptr::null_mut(),
            args: arena.args(doc.args),
        };
        // SAFETY: every pointer in `info` points into `arena` or a static, both
        // alive for the call; Redis copies the info and frees none of it.
        let status = unsafe { set_info(command, &info) };
        if status == raw::Status::Ok as c_int {
            documented += 1;
        } else {
            log::warn!(
                "consistency: Redis refused the COMMAND DOCS of {}",
                doc.name
            );
        }
    }
    documented
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(args: &[Arg], f: &mut impl FnMut(&Arg)) {
        for a in args {
            f(a);
            walk(a.subargs, f);
        }
    }

    #[test]
    fn every_public_command_is_documented_once() {
        let mut names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "consistency.check",
                "consistency.fix",
                "consistency.purge",
                "consistency.reload",
                "consistency.rules",
                "consistency.status"
            ]
        );
    }

    /// What Redis's validator would refuse, caught before a server sees it.
    #[test]
    fn argument_trees_are_well_formed() {
        for c in COMMANDS {
            assert!(
                !c.summary.is_empty() && !c.complexity.is_empty(),
                "{}",
                c.name
            );
            assert_eq!(
                c.arity, -1,
                "{}: the handlers check their own arguments",
                c.name
            );
            walk(c.args, &mut |a| {
                assert!(!a.name.is_empty(), "{}", c.name);
                let nested = matches!(a.kind, ArgType::OneOf | ArgType::Block);
                assert_eq!(nested, !a.subargs.is_empty(), "{}: {}", c.name, a.name);
                if a.kind == ArgType::PureToken {
                    assert!(a.token.is_some(), "{}: {}", c.name, a.name);
                }
                if a.multiple_token {
                    assert!(a.multiple && a.token.is_some(), "{}: {}", c.name, a.name);
                }
            });
        }
    }

    #[test]
    fn the_alternatives_are_oneof_blocks() {
        let get = |n: &str| COMMANDS.iter().find(|c| c.name == n).unwrap();
        let fix = get("consistency.fix");
        assert_eq!(fix.args[0].kind, ArgType::OneOf);
        let forms: Vec<&str> = fix.args[0].subargs.iter().map(|a| a.name).collect();
        assert_eq!(forms, ["ids", "all"]);
        let purge = get("consistency.purge");
        let tokens: Vec<_> = purge.args[0].subargs.iter().map(|a| a.token).collect();
        assert_eq!(tokens, [Some("MATCH"), Some("RULE")]);
        assert!(!purge.args[0].optional, "PURGE needs MATCH or RULE");
        assert_eq!(FORMAT_ARG.kind, ArgType::OneOf);
    }

    #[test]
    fn arena_terminates_arrays_and_keeps_strings() {
        let mut arena = Arena::default();
        let p = arena.args(FORMAT_ARG.subargs);
        // SAFETY: two elements plus the zeroed terminator, alive in `arena`.
        unsafe {
            assert!(!(*p.add(1)).name.is_null());
            assert!((*p.add(2)).name.is_null());
            let token = std::ffi::CStr::from_ptr((*p).token);
            assert_eq!(token.to_str().unwrap(), "resp");
        }
        assert!(arena.args(&[]).is_null());
    }
}
