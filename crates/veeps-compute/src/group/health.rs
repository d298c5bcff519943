//! Instance health: the process alive, the balancers' view of its targets, memory kills; and CPU sampling for scaling.

use super::*;

impl Compute {
    /// Health checks: pending instances enter service when healthy; with `lb` checks,
    /// in-service ones failing three times in a row (after the grace period) are replaced.
    /// `full`: instances in service too (and CPU sampled), not only the pending ones.
    pub(crate) async fn check_health(self: &Arc<Self>, g: &Arc<Group>, full: bool) {
        let (insts, spec) = {
            let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            (r.instances.clone(), r.spec.clone())
        };
        let mut checks = vec![];
        // Instances still being placed (no process yet) are not checked.
        for i in insts.iter().filter(|i| {
            i.pid != 0
                && (i.lifecycle == Lifecycle::Pending
                    || (full && i.lifecycle == Lifecycle::InService))
        }) {
            let t = spec.template.clone();
            let endpoint = self
                .net
                .endpoint(&Self::endpoint_name(&spec, &i.id))
                .ok()
                .flatten();
            let i = i.clone();
            let lb = self
                .target_health
                .get()
                .filter(|_| !spec.target_groups.is_empty())
                .filter(|th| th.serves(&spec.target_groups))
                // Served by a balancer: in service only once it finds the instance healthy.
                .map(|th| th.healthy(&spec.target_groups, &i.address).unwrap_or(false));
            checks.push(async move {
                let ok = match (lb, &endpoint, t.port) {
                    // The balancers' verdict, once they know the instance.
                    (Some(h), _, _) => h,
                    (None, Some(ep), Some(port)) => {
                        probe(ep, port, t.health_check_path.clone()).await
                    }
                    _ => true,
                };
                (i, ok)
            });
        }
        let results = futures_join(checks).await;
        let now = now_ms();
        let mut replace = vec![];
        // Instances whose launch boost ends (in service, or starting for too long).
        let mut settle = vec![];
        {
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            let mut changed = false;
            for (i, ok) in results {
                let alive = self.alive(&i);
                let Some(rec) = r.instances.iter_mut().find(|x| x.id == i.id) else {
                    continue;
                };
                if rec.lifecycle == Lifecycle::Terminating {
                    continue;
                }
                if ok && alive {
                    rec.failures = 0;
                    if rec.lifecycle == Lifecycle::Pending {
                        rec.lifecycle = Lifecycle::InService;
                        changed = true;
                        settle.push(rec.id.clone());
                        tracing::info!(
                            env = %spec.env,
                            group = %spec.name,
                            instance = %rec.id,
                            after_ms = now - rec.launched_ms,
                            "instance in service"
                        );
                    }
                    continue;
                }
                rec.failures += 1;
                if rec.lifecycle == Lifecycle::Pending
                    && now - rec.launched_ms >= super::launch::LAUNCH_BOOST.as_millis() as i64
                    && g.boost_over
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(rec.id.clone())
                {
                    settle.push(rec.id.clone());
                }
                let in_grace = now - rec.launched_ms < spec.grace_secs as i64 * 1000;
                if spec.health_check == HealthCheck::Lb && !in_grace && rec.failures >= 3 {
                    replace.push(rec.id.clone());
                }
            }
            if changed {
                self.save(&r);
            }
        }
        for iid in &settle {
            // The template it was launched with: the group's now, unless a rollout moved on.
            self.settle_cpu(iid, &spec.template);
        }
        for iid in replace {
            self.terminate(
                g,
                &iid,
                "the instance failed its health check 3 times in a row".into(),
            )
            .await;
        }
        if full {
            self.sample_cpu(g);
        }
    }

    pub(crate) fn sample_cpu(&self, g: &Group) {
        let (insts, spec) = {
            let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            (r.instances.clone(), r.spec.clone())
        };
        let now = std::time::Instant::now();
        let epoch = START.get_or_init(std::time::Instant::now);
        let t = now.duration_since(*epoch).as_nanos();
        let mut cpu = g.cpu.lock().unwrap_or_else(|p| p.into_inner());
        for i in insts {
            let cg = Cgroup::new(&self.cgroups, &self.prefix, &i.id);
            let Some(used) = cg.cpu_ns() else { continue };
            let pct = match cpu.get(&i.id) {
                Some((t0, u0, _)) if t > *t0 => {
                    let wall = (t - t0) as f64;
                    100.0 * used.saturating_sub(*u0) as f64 / wall / spec.template.cpu.max(0.01)
                }
                _ => 0.0,
            };
            cpu.insert(i.id.clone(), (t, used, pct.clamp(0.0, 100.0)));
        }
    }
}
