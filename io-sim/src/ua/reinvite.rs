//! The other party's re-INVITEs: answered at once, or held for a while
//! (`UaConfig::reinvite_answer_ms`) as a phone asking its user would, and refused 487 when
//! the call ends first (§15.1.2).

use super::*;

impl Ua {
    /// Answers the other party's re-INVITE 200 with our SDP, retransmitted until its ACK.
    pub(super) fn answer_reinvite(
        &mut self,
        call_id: &str,
        key: TxKey,
        req: Request,
        now: UnixMillis,
    ) {
        let Some(c) = self.calls.get(call_id) else {
            return;
        };
        let (tag, token) = (c.local_tag.clone(), c.token.clone());
        let cseq = req
            .headers
            .get("CSeq")
            .and_then(CSeq::parse)
            .map_or(0, |c| c.seq);
        let mut resp = response_to(&req, 200, None, &tag);
        resp.headers
            .push("Contact", format!("<{}>", contact_uri(&self.cfg)));
        resp.headers.push("Content-Type", "application/sdp");
        resp.body = sdp(&self.cfg, &token, 3);
        let t1 = self.timers_cfg.t1;
        if let Some(c) = self.calls.get_mut(call_id) {
            if let Some(target) = req.headers.get("Contact") {
                c.remote_target = uri_of(target);
            }
            c.pending_2xx = Some(Pending2xx {
                key: key.clone(),
                response: resp.clone(),
                cseq,
                interval: t1,
                give_up_at: now + 64 * t1,
            });
        }
        let _ = self.tx.send_response(&key, resp, now);
        self.at(now + t1, Action::Resend2xx(call_id.to_string()));
    }

    /// The re-INVITE held in call `call_id`, if any, is taken out of it: answered now by
    /// the caller of this, or refused `code` here.
    pub(super) fn take_held_reinvite(&mut self, call_id: &str) -> Option<(TxKey, Request)> {
        let c = self.calls.get_mut(call_id)?;
        let held = c.reinvite_in.take()?;
        let token = c.token.clone();
        self.ledger.call(&token, |l| {
            l.reinvites_held = l.reinvites_held.saturating_sub(1)
        });
        Some(held)
    }

    pub(super) fn refuse_held_reinvite(&mut self, call_id: &str, code: u16, now: UnixMillis) {
        if let Some((key, req)) = self.take_held_reinvite(call_id) {
            let tag = self
                .calls
                .get(call_id)
                .map(|c| c.local_tag.clone())
                .unwrap_or_default();
            let _ = self
                .tx
                .send_response(&key, response_to(&req, code, None, &tag), now);
        }
    }
}
