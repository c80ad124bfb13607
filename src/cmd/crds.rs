//! `pennant crds`: the CustomResourceDefinitions pennant serves, as YAML.

pub fn command() -> anyhow::Result<()> {
    print!("{}", crate::api::crds::to_yaml());
    Ok(())
}
