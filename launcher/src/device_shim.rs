// TEMPORARY until the kernels crate's device module lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest { Auto, Cpu, Cuda }
impl std::str::FromStr for DeviceRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s { "auto" => Ok(Self::Auto), "cpu" => Ok(Self::Cpu), "cuda" => Ok(Self::Cuda), _ => Err(format!("unknown device {s:?}")) }
    }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device { Cpu }
pub fn choose(r: DeviceRequest, _l: usize) -> anyhow::Result<(Device, String)> {
    if r == DeviceRequest::Cuda { anyhow::bail!("no CUDA") }
    Ok((Device::Cpu, "shim".into()))
}
