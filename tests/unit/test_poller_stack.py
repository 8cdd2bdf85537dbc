"""The poller's deployment: the CloudFormation stack is cfn-lint clean and says what
docs/deploy.md promises (health check, circuit breaker, autoscaling on lag, least privilege,
an internal admin load balancer, no image default); the Dockerfile runs as non-root and
installs through infra/poller/install.sh (the script tests/e2e/test_wheel.py runs), with the
same health check command as the task."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapter.local.lambda_server import load_serverless
from adapter.store.envelope import ENCRYPTION_CONTEXT
from tests._dockerfile import dockerfile_instructions

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "infra" / "poller" / "poller-resources.yml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return load_serverless(STACK)


def _statements(role: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for policy in role["Properties"]["Policies"]:
        if "Fn::If" in policy:  # [condition, policy, AWS::NoValue]
            policy = policy["Fn::If"][1]
        out[policy["PolicyName"]] = policy["PolicyDocument"]["Statement"]
    return out


def test_the_stack_is_cfn_lint_clean() -> None:
    lint = subprocess.run(
        [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())",
         str(STACK)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.promise("p-deploy-no-default-image")
def test_no_default_starts_a_useless_container(stack: dict[str, Any]) -> None:
    image = stack["Parameters"]["Image"]
    assert "Default" not in image
    assert stack["Parameters"]["Subnets"]["Type"] == "List<AWS::EC2::Subnet::Id>"
    assert "Default" not in stack["Parameters"]["Subnets"]


@pytest.mark.promise("p-deploy-health")
@pytest.mark.promise("p-deploy-circuit-breaker")
def test_the_service_checks_health_and_rolls_back(stack: dict[str, Any]) -> None:
    resources = stack["Resources"]
    task = resources["TaskDefinition"]["Properties"]
    assert task["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    container = task["ContainerDefinitions"][0]
    assert container["HealthCheck"]["Command"] == [
        "CMD", "kafka-ingress", "health", "--timeout", "3",
    ]  # fmt: skip
    assert {s["Name"] for s in container["Secrets"]} == {
        "KAFKA_INGRESS_KAFKA_CLUSTERS",
        "KAFKA_INGRESS_ADMIN_TOKEN",
    }
    service = resources["Service"]["Properties"]
    breaker = service["DeploymentConfiguration"]["DeploymentCircuitBreaker"]
    assert breaker == {"Enable": True, "Rollback": True}
    assert resources["AdminTargetGroup"]["Properties"]["HealthCheckPath"] == "/health"
    assert resources["AdminLoadBalancer"]["Properties"]["Scheme"] == "internal"


@pytest.mark.promise("p-deploy-autoscaling")
@pytest.mark.promise("p-deploy-lag-metric")
def test_autoscaling_keeps_lag_per_task_between_min_and_max(stack: dict[str, Any]) -> None:
    resources = stack["Resources"]
    target = resources["ScalableTarget"]["Properties"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (
        {"Ref": "MinTasks"},
        {"Ref": "MaxTasks"},
    )
    config = resources["LagScaling"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    metrics = {m["Id"]: m for m in config["CustomizedMetricSpecification"]["Metrics"]}
    lag = metrics["lag"]["MetricStat"]["Metric"]
    assert (lag["Namespace"], lag["MetricName"]) == ("KafkaIngress", "ConsumerLag")
    assert metrics["lag_per_task"]["Expression"] == "lag / tasks"
    # The metric contract the pollers' embedded-metric-format lines follow is documented.
    doc = DEPLOY_DOC.read_text()
    assert "KafkaIngress" in doc
    assert "ConsumerLag" in doc


def test_the_roles_grant_what_the_poller_uses_and_no_more(stack: dict[str, Any]) -> None:
    resources = stack["Resources"]
    task = _statements(resources["TaskRole"])
    actions = [
        action
        for statements in task.values()
        for statement in statements
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    ]
    assert not [a for a in actions if "*" in a], "no wildcard actions"
    assert "dynamodb:DeleteTable" not in actions
    assert "dynamodb:CreateTable" not in actions
    (invoke,) = task["invoke-handlers"]
    assert invoke["Action"] == "lambda:InvokeFunction"
    assert all(":function:${FunctionPrefix}*" in r["Fn::Sub"] for r in invoke["Resource"])
    (tables,) = task["state-tables"]
    assert all("table/${TablePrefix}*" in r["Fn::Sub"] for r in tables["Resource"])
    msk = {
        a
        for s in task["msk-iam"]
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    assert msk == {
        "kafka-cluster:Connect",
        "kafka-cluster:DescribeCluster",
        "kafka-cluster:DescribeTopic",
        "kafka-cluster:ReadData",
        "kafka-cluster:WriteData",
        "kafka-cluster:DescribeGroup",
        "kafka-cluster:AlterGroup",
    }
    execution = _statements(resources["ExecutionRole"])["inject-secrets"]
    assert [s["Action"] for s in execution[:2]] == [
        "ssm:GetParameters",
        "secretsmanager:GetSecretValue",
    ]
    assert execution[1]["Resource"] == {"Ref": "AdminToken"}


def test_secrets_at_rest_use_a_key_only_the_poller_may_use(stack: dict[str, Any]) -> None:
    resources = stack["Resources"]
    (references,) = _statements(resources["TaskRole"])["secret-references"]
    assert set(references["Action"]) == {"secretsmanager:GetSecretValue", "ssm:GetParameter"}
    assert all("${AWS::StackName}/*" in r["Fn::Sub"] for r in references["Resource"])
    key_policy = resources["SecretsKey"]["Properties"]["KeyPolicy"]["Statement"]
    (poller,) = [s for s in key_policy if s["Sid"] == "poller-seals-and-opens"]
    assert poller["Principal"] == {"AWS": {"Fn::GetAtt": ["TaskRole", "Arn"]}}
    assert poller["Action"] == ["kms:GenerateDataKey", "kms:Decrypt"]
    assert poller["Condition"]["StringEquals"] == {
        "kms:EncryptionContext:purpose": ENCRYPTION_CONTEXT["purpose"]
    }
    (task,) = resources["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in task["Environment"]}
    assert env["KAFKA_INGRESS_SECRETS_KMS_KEY_ID"] == {"Fn::GetAtt": ["SecretsKey", "Arn"]}


@pytest.mark.promise("p-deploy-image")
def test_the_image_installs_through_the_tested_script_and_runs_as_non_root() -> None:
    steps = dockerfile_instructions()
    runs = [rest for keyword, rest in steps if keyword == "RUN"]
    # Build stage: the wheel alone (test_wheel.py runs this very command).
    assert runs[0] == "pip wheel --no-deps --wheel-dir /wheels ."
    # Final stage: the script test_wheel.py runs, with the wheel and the lock file.
    install = shlex.split(runs[1].split("&&")[0])
    assert install == [
        "sh", "/tmp/install.sh", "/tmp/wheels/kafka_ingress-*.whl", "/tmp/requirements.lock",
    ]  # fmt: skip
    assert ("COPY", "requirements.lock infra/poller/install.sh /tmp/") in steps
    assert not [r for r in runs[1:] if "pip install" in r], "nothing installed beside the script"
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users == ["10001"]
    assert "useradd --system --uid 10001" in runs[1]
    assert ("ENTRYPOINT", '["kafka-ingress"]') in steps
    assert ("CMD", '["serve"]') in steps
    health = next(rest for keyword, rest in steps if keyword == "HEALTHCHECK")
    assert health.endswith('CMD ["kafka-ingress", "health", "--timeout", "3"]')
    froms = [rest for keyword, rest in steps if keyword == "FROM"]
    assert froms[0].startswith("--platform=$BUILDPLATFORM ")
