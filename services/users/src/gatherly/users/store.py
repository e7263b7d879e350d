"""Tables of the users service and the queries that need SQL."""

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from gatherly.kernel.tables import kernel_tables
from gatherly.kernel.uow import UnitOfWork

metadata = MetaData()
kernel_tables(metadata)


class UsersUnitOfWork(UnitOfWork):
    """One transaction of the users service: its stores plus the outbox."""

    def open_stores(self, session: AsyncSession) -> None:
        pass
