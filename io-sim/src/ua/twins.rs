//! Devices that share one address-of-record, each registering its own Contact through its
//! own node, and the check that what a 200 lists agrees with RFC 3261 §10.3 as the devices
//! themselves saw it: a binding another device was granted (answered before our request
//! left, so processed before it) and that has not expired must be listed; one that can no
//! longer live must not be. A registrar that writes an address-of-record without a
//! compare-and-swap loses one device's binding when two REGISTERs race through two nodes;
//! this is the check that sees it.

use super::*;
use crate::ledger::RegView;

impl Ua {
    /// Publishes this device's view of its binding for the other devices' checks (after
    /// every turn of the user agent's loop).
    pub(super) fn publish_view(&self) {
        if !self.cfg.twin {
            return;
        }
        let view = RegView {
            user: self.cfg.user.clone(),
            grants: self.reg.grants.clone(),
            could_live_until: self.reg.could_live_until,
            pending: !self.reg.pending.is_empty(),
        };
        self.ledger
            .lock()
            .views
            .insert(contact_uri(&self.cfg), view);
    }

    /// A REGISTER of ours leaves: a race when another device's is in flight too.
    pub(super) fn note_race(&self) {
        if !self.cfg.twin {
            return;
        }
        let ours = contact_uri(&self.cfg);
        let mut l = self.ledger.lock();
        let racing = l
            .views
            .iter()
            .any(|(c, v)| *c != ours && v.user == self.cfg.user && v.pending);
        if racing {
            l.counts.register_races += 1;
        }
    }

    /// Checks the bindings a 200 to our REGISTER (sent at `sent_at`) lists against the
    /// other devices' views.
    pub(super) fn check_listing(&mut self, resp: &Response, sent_at: UnixMillis, now: UnixMillis) {
        if !self.cfg.twin {
            return;
        }
        let ours = contact_uri(&self.cfg);
        let listed: Vec<String> = resp
            .headers
            .get_all("Contact")
            .filter_map(NameAddr::parse)
            .map(|n| n.uri.to_ascii_lowercase())
            .collect();
        let others: Vec<(String, RegView)> = self
            .ledger
            .lock()
            .views
            .iter()
            .filter(|(c, v)| **c != ours && v.user == self.cfg.user)
            .map(|(c, v)| (c.clone(), v.clone()))
            .collect();
        let bound = self.lookup_bound();
        for (contact, view) in others {
            let is_listed = listed.contains(&contact.to_ascii_lowercase());
            let must = super::checks::must_find(&view.grants, sent_at, now + bound);
            let must_not = view.could_live_until + bound < sent_at && !view.pending;
            if must && !is_listed {
                let until = view.grants.iter().map(|g| g.1).max().unwrap_or(0);
                self.violation(format_args!(
                    "lost update: {contact}, granted until {until}, not listed in the 200 at {now}"
                ));
            }
            if must_not && is_listed {
                self.violation(format_args!(
                    "{contact} listed at {now}, but could live only until {}",
                    view.could_live_until
                ));
            }
            self.ledger.lock().counts.listings_checked += 1;
        }
    }
}
