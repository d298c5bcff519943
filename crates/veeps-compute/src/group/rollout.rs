//! Instance refresh: replacing instances batch by batch with a new template, waiting for health, rolling back on failure.

use super::*;

impl Compute {
    /// Rolls `new` out over instances running anything else, batch by batch.
    pub(crate) async fn roll_out(
        self: &Arc<Self>,
        g: &Arc<Group>,
        new: Template,
        old: Template,
    ) -> Result<(), ComputeError> {
        g.refreshing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let result = self.roll_out_inner(g, &new).await;
        if let Err(e) = &result {
            // Back to the old template: stop every new instance; the supervisor refills.
            let new_fp = new.fingerprint();
            let news: Vec<String> = {
                let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.instances
                    .iter()
                    .filter(|i| i.fingerprint == new_fp)
                    .map(|i| i.id.clone())
                    .collect()
            };
            for iid in news {
                self.terminate(g, &iid, "rolling back a failed rollout".into())
                    .await;
            }
            {
                let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.spec.template = old;
                self.save(&r);
            }
            self.activity(g, "Rolled back the rollout".into(), e.to_string());
        }
        g.refreshing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        g.wake.notify_one();
        result
    }

    pub(crate) async fn roll_out_inner(
        self: &Arc<Self>,
        g: &Arc<Group>,
        new: &Template,
    ) -> Result<(), ComputeError> {
        let new_fp = new.fingerprint();
        let (desired, refresh, grace) = {
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            r.spec.template = new.clone();
            self.save(&r);
            (r.desired, r.spec.refresh, r.spec.grace_secs)
        };
        let min_healthy =
            ((desired as u64 * refresh.min_healthy_percentage as u64).div_ceil(100)) as u32;
        let batch = desired.saturating_sub(min_healthy).max(1) as usize;
        self.activity(
            g,
            format!("Starting a rollout to image {}", new.image_id),
            format!("the launch template changed; batches of {batch}, at least {min_healthy} of {desired} in service"),
        );
        let timeout = Duration::from_secs(refresh.timeout_secs.max(grace).max(5));
        loop {
            let olds: Vec<String> = {
                let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.instances
                    .iter()
                    .filter(|i| i.fingerprint != new_fp && i.lifecycle != Lifecycle::Terminating)
                    .map(|i| i.id.clone())
                    .collect()
            };
            let in_new = {
                let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.instances
                    .iter()
                    .filter(|i| i.fingerprint == new_fp && i.lifecycle != Lifecycle::Terminating)
                    .count()
            };
            if olds.is_empty() {
                // Fill up to the desired count with new instances.
                if (in_new as u32) < desired {
                    for _ in in_new as u32..desired {
                        self.launch(g, new, "the rollout completes the group".into())
                            .await?;
                    }
                    self.wait_healthy(g, &new_fp, desired as usize, timeout)
                        .await?;
                }
                break;
            }
            let k = batch.min(olds.len());
            if refresh.create_before_destroy {
                let target = in_new + k;
                let launches =
                    (0..k).map(|_| self.launch(g, new, "the rollout replaces an instance".into()));
                for r in futures_join(launches.collect()).await {
                    r?;
                }
                self.wait_healthy(g, &new_fp, target, timeout).await?;
                let victims = self.pick_victims(g, k, Some(&olds_fp(g, &olds)));
                for v in victims {
                    self.terminate(g, &v, "replaced by the rollout".into())
                        .await;
                }
            } else {
                let victims = self.pick_victims(g, k, Some(&olds_fp(g, &olds)));
                for v in victims {
                    self.terminate(g, &v, "replaced by the rollout".into())
                        .await;
                }
                for _ in 0..k {
                    self.launch(g, new, "the rollout replaces an instance".into())
                        .await?;
                }
                self.wait_healthy(g, &new_fp, in_new + k, timeout).await?;
            }
        }
        self.activity(
            g,
            format!("Finished the rollout to image {}", new.image_id),
            "every instance runs the new launch template".into(),
        );
        Ok(())
    }

    pub(crate) async fn wait_healthy(
        &self,
        g: &Arc<Group>,
        fp: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<(), ComputeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (up, died) = {
                let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                let up = r
                    .instances
                    .iter()
                    .filter(|i| i.fingerprint == fp && i.lifecycle == Lifecycle::InService)
                    .count();
                let live = r
                    .instances
                    .iter()
                    .filter(|i| i.fingerprint == fp && i.lifecycle != Lifecycle::Terminating)
                    .count();
                (up, live < n)
            };
            if up >= n {
                return Ok(());
            }
            if died {
                return Err(ComputeError::RolledBack(
                    "new instances exited before becoming healthy; the rollout was rolled back (see `veeps logs` for their output)".to_string(),
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ComputeError::RolledBack(format!(
                    "new instances did not become healthy within {} s; the rollout was rolled back",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(TICK).await;
        }
    }
}
