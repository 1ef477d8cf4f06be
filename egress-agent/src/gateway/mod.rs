//! `egress-agent gateway`: attach the datapath, keep its client list equal to
//! the pod source's, sweep expired flows, exit cleanly on SIGTERM/SIGINT.
mod reconcile;
mod settings;

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    cli::GatewayArgs,
    datapath::{conntrack, loader::Datapath},
    netdev,
    pods::{file::FileSource, ClientSnapshot, PodSource},
};

pub fn run(args: GatewayArgs) -> Result<()> {
    // Everything a user can get wrong is checked before touching the kernel.
    let settings = settings::Settings::from_args(&args)?;
    let (source, first_snapshot) = FileSource::open(args.pods_file.clone())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(settings, Box::new(source), first_snapshot))
}

async fn serve(
    settings: settings::Settings,
    source: Box<dyn PodSource>,
    first: ClientSnapshot,
) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    let mut datapath = Datapath::load(
        &settings.datapath_config,
        settings.conntrack_size,
        &settings.excluded,
        settings.ebpf_object.as_deref(),
    )?;
    datapath.attach(&settings.interface.name)?;
    let mut clients = reconcile::ClientTable::default();
    clients.apply(&mut datapath.maps, &first)?;
    tracing::info!(
        interface = %settings.interface.name,
        gateway_ip = %settings.interface.ipv4,
        clients = first.len(),
        source = %source.describe(),
        "ready: datapath attached and client list applied"
    );

    let (updates_tx, mut updates_rx) = tokio::sync::watch::channel(Some(first));
    let source_task = tokio::spawn(source.run(updates_tx));
    let mut gc = tokio::time::interval(Duration::from_secs(settings.gc_interval_s.max(1)));

    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: detaching and exiting"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: detaching and exiting"); break; }
            changed = updates_rx.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the pod source stopped unexpectedly");
                }
                let snapshot = updates_rx.borrow_and_update().clone();
                if let Some(snapshot) = snapshot {
                    // A failed update keeps the previous list; the next
                    // change retries from the full snapshot.
                    if let Err(err) = clients.apply(&mut datapath.maps, &snapshot) {
                        tracing::error!("applying the client list: {err:#}");
                    }
                }
            }
            _ = gc.tick() => {
                match conntrack::sweep_expired(&mut datapath.maps, netdev::monotonic_ns()) {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(flows = n, "expired flows removed"),
                    Err(err) => tracing::warn!("conntrack sweep: {err:#}"),
                }
            }
        }
    }
    source_task.abort();
    drop(datapath);
    Ok(())
}
