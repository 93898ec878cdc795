"""Deploy with boto3: a self-terminating EC2 benchmark fleet and a SageMaker endpoint that scales.

One module per concern: aws (clients, calls as data, errors), amis (SSM public parameters), iam
(the instance role), ec2 (security group, launch, AZ fallback, cleanup), userdata (the instance's
script), staging (wheel and configs to S3, results back), fleet (the `deploy bench` run),
sagemaker (model.tar.gz, model, endpoint), autoscaling (Application Auto Scaling), commands (CLI).
boto3 is imported only when an AWS call is made: `pip install neuron-encoder[aws]`.
"""
