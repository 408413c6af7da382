//! The engine's Lua scripts. Each one is a step that must be atomic; its file says why.

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
}

impl Scripts {
    pub fn new() -> Scripts {
        let prelude = super::keys::lua_prelude();
        let script = |parts: &[&str]| Script::new(&format!("{prelude}{}", parts.concat()));
        Scripts {
            enqueue: script(&[include_str!("lua/task_id.lua"), include_str!("lua/enqueue.lua")]),
            fetch: script(&[include_str!("lua/task_id.lua"), include_str!("lua/fetch.lua")]),
            start: script(&[include_str!("lua/done.lua"), include_str!("lua/start.lua")]),
            finish: script(&[
                include_str!("lua/wake.lua"),
                include_str!("lua/done.lua"),
                include_str!("lua/finish.lua"),
            ]),
            fail: script(&[
                include_str!("lua/wake.lua"),
                include_str!("lua/entry_payload.lua"),
                include_str!("lua/letter.lua"),
                include_str!("lua/fail.lua"),
            ]),
            claim: script(&[
                include_str!("lua/wake.lua"),
                include_str!("lua/task_id.lua"),
                include_str!("lua/claim.lua"),
            ]),
            renew: script(&[include_str!("lua/renew.lua")]),
            cancel: script(&[
                include_str!("lua/wake.lua"),
                include_str!("lua/done.lua"),
                include_str!("lua/entry_payload.lua"),
                include_str!("lua/cancel.lua"),
            ]),
            redrive: script(&[include_str!("lua/letter.lua"), include_str!("lua/redrive.lua")]),
            dlq_delete: script(&[include_str!("lua/letter.lua"), include_str!("lua/dlq_delete.lua")]),
            quarantine: script(&[include_str!("lua/quarantine.lua")]),
            turn: script(&[include_str!("lua/turn.lua")]),
            lease: script(&[include_str!("lua/lease.lua")]),
            release: script(&[include_str!("lua/release.lua")]),
            conv_append: script(&[include_str!("lua/conv_mark.lua"), include_str!("lua/conv_append.lua")]),
            sent: script(&[include_str!("lua/conv_mark.lua"), include_str!("lua/sent.lua")]),
            fire: script(&[include_str!("lua/fire.lua")]),
            trim: script(&[include_str!("lua/trim.lua")]),
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
