"""Pulumi components: they translate a Plan into pulumi_docker resources and decide nothing."""
from .gpu_host import GpuHost, GpuHostArgs
from .model_deployment import ModelDeployment, ModelDeploymentArgs

__all__ = ["GpuHost", "GpuHostArgs", "ModelDeployment", "ModelDeploymentArgs"]
