"""The BHXH plugin (issue 18): the national social-insurance portal's services for the gateway."""
