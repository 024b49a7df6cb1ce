import { QueueService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { TokenService as TokenServiceDesc } from "../../gen/boxoffice/token/v1/token_pb.js";
import { implementation, type ServiceModule } from "../platform/suite.js";
import { Migration20261124000000_users } from "./migrations/Migration20261124000000_users.js";
import { TokenService } from "./token-service.js";
import { User } from "./user.entity.js";

/** Token service: users and the signed tokens that identify them. */
export const tokenModule: ServiceModule = {
  name: "token",
  serves: [TokenServiceDesc],
  database: { schema: "token", entities: [User], migrations: [Migration20261124000000_users] },
  create: ({ tokens, clients }) => ({
    implementations: [implementation(TokenServiceDesc, new TokenService(tokens, clients.for(QueueService)))],
  }),
};
