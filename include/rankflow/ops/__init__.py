"""Operations: lifecycle commands, alert messages, embedded services, the demo."""
