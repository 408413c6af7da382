//! The engine's Lua scripts. Each one is a step that must be atomic; its file says why.
//!
//! Every script starts with a `#!lua` line (Redis 7 script flags), which makes Redis check that
//! every key a script touches is in the slot of the keys it was given: on a Redis Cluster a key
//! in another slot fails the call instead of being written on whatever node ran it. The flag
//! also settles what a script does when Redis is over `maxmemory`: a script that takes new work
//! in is refused whole (nothing half-written), and one that moves work already taken along to
//! its end (`allow-oom`: start, finish, retry, dead-letter, cancel, trim, …) runs whole, since
//! settling work is what frees memory and a refused one could leave a sent reply unmarked.

use redis::Script;

pub struct Scripts {
    pub enqueue: Script,
    pub fetch: Script,
    pub start: Script,
    pub finish: Script,
    pub fail: Script,
    pub claim: Script,
    pub renew: Script,
    pub cancel: Script,
    pub redrive: Script,
    pub dlq_delete: Script,
    pub quarantine: Script,
    pub turn: Script,
    pub lease: Script,
    pub release: Script,
    pub conv_append: Script,
    pub sent: Script,
    pub fire: Script,
    pub trim: Script,
    pub run_now: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        let prelude = super::keys::lua_prelude();
        let intake = |parts: &[&str]| Script::new(&format!("#!lua\n{prelude}{}", parts.concat()));
        let settle = |parts: &[&str]| Script::new(&format!("#!lua flags=allow-oom\n{prelude}{}", parts.concat()));
        Scripts {
            enqueue: intake(&[include_str!("lua/task_id.lua"), include_str!("lua/enqueue.lua")]),
            fetch: settle(&[include_str!("lua/task_id.lua"), include_str!("lua/fetch.lua")]),
            start: settle(&[include_str!("lua/done.lua"), include_str!("lua/start.lua")]),
            finish: settle(&[
                include_str!("lua/wake.lua"),
                include_str!("lua/done.lua"),
                include_str!("lua/history.lua"),
                include_str!("lua/finish.lua"),
            ]),
            fail: settle(&[
                include_str!("lua/wake.lua"),
                include_str!("lua/entry_payload.lua"),
                include_str!("lua/letter.lua"),
                include_str!("lua/history.lua"),
                include_str!("lua/fail.lua"),
            ]),
            claim: settle(&[
                include_str!("lua/wake.lua"),
                include_str!("lua/task_id.lua"),
                include_str!("lua/claim.lua"),
            ]),
            renew: settle(&[include_str!("lua/renew.lua")]),
            cancel: settle(&[
                include_str!("lua/wake.lua"),
                include_str!("lua/done.lua"),
                include_str!("lua/entry_payload.lua"),
                include_str!("lua/history.lua"),
                include_str!("lua/cancel.lua"),
            ]),
            redrive: intake(&[include_str!("lua/letter.lua"), include_str!("lua/redrive.lua")]),
            dlq_delete: settle(&[include_str!("lua/letter.lua"), include_str!("lua/dlq_delete.lua")]),
            quarantine: intake(&[include_str!("lua/quarantine.lua")]),
            turn: settle(&[include_str!("lua/turn.lua")]),
            lease: intake(&[include_str!("lua/lease.lua")]),
            release: settle(&[include_str!("lua/release.lua")]),
            conv_append: intake(&[include_str!("lua/conv_mark.lua"), include_str!("lua/conv_append.lua")]),
            sent: settle(&[include_str!("lua/conv_mark.lua"), include_str!("lua/sent.lua")]),
            fire: intake(&[include_str!("lua/fire.lua")]),
            trim: settle(&[include_str!("lua/trim.lua")]),
            run_now: settle(&[include_str!("lua/run_now.lua")]),
        }
    }

    /// Load every script, so pipelined `EVALSHA`s find them (after a Redis restart too).
    pub async fn load_all<C: redis::aio::ConnectionLike + Send>(&self, con: &mut C) -> redis::RedisResult<()> {
        for s in [
            &self.enqueue,
            &self.fetch,
            &self.start,
            &self.finish,
            &self.fail,
            &self.claim,
            &self.renew,
            &self.cancel,
            &self.redrive,
            &self.dlq_delete,
            &self.quarantine,
            &self.turn,
            &self.lease,
            &self.release,
            &self.conv_append,
            &self.sent,
            &self.fire,
            &self.trim,
            &self.run_now,
        ] {
            s.load_async(con).await?;
        }
        Ok(())
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}

/// True when Redis no longer knows a script (it restarted or was flushed with SCRIPT FLUSH).
pub(crate) fn is_noscript(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}
